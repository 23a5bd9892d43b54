"""QwenTTS: one object that loads a checkpoint and turns text into a lazy stream of audio."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .audio_io import read_audio, resample
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_safetensors
from .codec import DecoderState, SpeechCodec
from .codec_slots import CodecSlots, read_to_host
from .options import MAX_SEED, SpeechOptions
from .generate import (FRAMES_CAP, MIN_FRAMES_BEFORE_EOS, DecodeBatch, FrameChunks, Row, decode_stream, frame_limits,
                       generate_frames)
from .runners import RUNNERS, make_runner, step_plan_of
from . import SAMPLE_RATE
from .prompt import PromptBuilder, TextMode, VoicePrompt
from .layers import fuse_weights
from .quantize import (INT8_PROMPT_CHOICES, cpu_has_fast_bf16, cpu_int8_matmul,  # cpu_has_fast_bf16: resolve_dtype's
                       quantize_int8, resolve_quantize)
from .sampling import SamplingConfig
from .speaker import log_mel
from .talker import Qwen3TTSModel

_LOGGER = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# On a CPU compiling the code predictor gains little per frame for a compile of minutes at every
# start (BENCHMARKS.md, "CPU: eager against the compiled code predictor"): not the default there
# until a measurement says otherwise.
COMPILE_ON_CPU = False
# On CUDA the graphs alone (the eager fused step captured) serve without a compile, while compiling
# that step took longer than a server start can wait, even for the tiny checkpoint (BENCHMARKS.md,
# "First GPU run"): a start that long is worse than the speed it buys.
COMPILE_ON_CUDA = False
# Positions of the single-stream batch: it grows (powers of two) for longer requests, up to
# SOLO_MAX_LEN (about 470 MB of cache at the 1.7B shapes in bf16); longer ones get an eager batch.
SOLO_MIN_LEN, SOLO_MAX_LEN = 1024, 4096


@dataclass
class AudioChunk:
    """A piece of the stream: 24 kHz mono float32 samples and the codes they came from."""

    samples: np.ndarray  # (n * 1920,) float32 in [-1, 1]
    codes: np.ndarray  # (n, 16) int64
    first_frame: int  # index of codes[0] within the utterance


class PromptTooLong(ValueError):
    """A request whose prompt and text do not fit a batch row: it can be generated alone instead."""


def resolve_seed(seed: int | None) -> int:
    """The seed a request samples with: the caller's, or a fresh random one."""
    return secrets.randbits(31) if seed is None else int(seed) & MAX_SEED


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("--device cuda was asked for, but PyTorch sees no CUDA GPU")
    if resolved.type == "cuda" and resolved.index not in (None, 0):
        # Streams, events and graph captures here use each thread's current GPU, the first one.
        raise ValueError(f"device {device}: only the first GPU is supported; make another the first with "
                         f"CUDA_VISIBLE_DEVICES={resolved.index}")
    return resolved


def resolve_compile(compile: bool | str, device: torch.device) -> bool:
    """Whether frame steps run compiled: True/False, or "auto": on CUDA when COMPILE_ON_CUDA, on a
    CPU when COMPILE_ON_CPU, wherever a C/C++ compiler is there for Inductor / Triton to build kernels with."""
    if isinstance(compile, str):
        compile = {"true": True, "false": False}.get(compile.strip().lower(), compile)
    if isinstance(compile, bool):
        return compile
    if compile != "auto":
        raise ValueError(f"compile must be true, false or auto, not {compile!r}")
    wanted = (device.type == "cuda" and COMPILE_ON_CUDA) or (device.type == "cpu" and COMPILE_ON_CPU)
    return wanted and any(shutil.which(name) for name in ("cc", "gcc", "c++", "g++", "clang"))


def resolve_runner(runner: str, device: torch.device, compile_steps: bool) -> str:
    """How frame steps run (runners.make_runner): "auto" is CUDA graphs on CUDA, the compiled code
    predictor on a CPU that compiles, else eager."""
    if runner == "auto":
        return "cuda-graphs" if device.type == "cuda" else "compiled" if compile_steps else "eager"
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {', '.join(RUNNERS)} or auto")
    if runner == "cuda-graphs" and device.type != "cuda":
        raise ValueError("CUDA graphs need a CUDA device")
    return runner


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16()):
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} or auto, not {dtype!r}")
    return DTYPES[dtype]


class QwenTTS:
    """A loaded Qwen3-TTS 12 Hz checkpoint.

        tts = QwenTTS("Qwen/Qwen3-TTS-12Hz-1.7B-Base", device="cuda")
        voice = tts.clone_voice("alice.wav", "What is said in alice.wav")
        for chunk in tts.stream("Hello there.", voice):
            play(chunk.samples)
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, model: str | os.PathLike, *, device: str | None = "auto", dtype: str | torch.dtype | None = "auto",
                 codec_dtype: str | torch.dtype | None = "float32", local_files_only: bool = False,
                 revision: str | None = None, compile: bool | str = "auto", runner: str = "auto",
                 quantize: str | None = "none", int8_prompts: str = "auto") -> None:
        """compile: frame steps compiled by torch.compile (resolve_compile); runner: how a frame step
        runs, for single streams here and BatchScheduler's "auto" (resolve_runner); int8_prompts:
        auto or off, whether int8 weights on a CPU run prompts through its integer matmul
        (resolve_int8_prompts)."""
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.compile_steps = resolve_compile(compile, self.device)
        self.runner = resolve_runner(runner, self.device, self.compile_steps)
        self.quantize = resolve_quantize(quantize, self.device, self.dtype)
        self.int8_prompts = resolve_int8_prompts(int8_prompts, self.quantize, self.device)
        if self.quantize == "int8" and self.device.type != "cpu":
            _LOGGER.warning("int8 weights on %s have no int8 kernel: every call converts them to %s, which is "
                            "slower than %s weights (--quantize auto keeps them off there)",
                            self.device, self.dtype, self.dtype)
        self.checkpoint: Checkpoint = load_checkpoint(model, local_files_only=local_files_only, revision=revision)
        cfg = self.checkpoint.config
        self.model_type = cfg.model_type
        self.model = _load_model(self.checkpoint, self.device, self.dtype)
        _quantize_model(self.model, self.quantize, self.dtype, self.int8_prompts)
        self.codec = _load_codec(self.checkpoint, self.device, resolve_dtype(codec_dtype, self.device),
                                 with_encoder=cfg.model_type == "base")
        self.tokenizer = _load_tokenizer(self.checkpoint)
        self.prompts = PromptBuilder(self.model.talker, cfg, self.tokenizer)
        self.default_sampling = SamplingConfig.from_generation_config(self.checkpoint.generation)
        self._primed: OrderedDict[str, DecoderState] = OrderedDict()
        self._primed_lock = threading.Lock()
        self._solo: DecodeBatch | None = None  # single streams' batch, kept: its graphs are captured once
        self._solo_codec: CodecSlots | None = None  # single streams' codec slot, kept with it
        self._solo_lock = threading.Lock()
        _LOGGER.info("Loaded %s (%s) on %s as %s%s%s", self.checkpoint.path, cfg.model_type, self.device, self.dtype,
                     "" if self.quantize == "none" else f", {self.quantize} weights",
                     f", int8 prompts ({cpu_int8_matmul()} matmul)" if self.int8_prompts else "")

    # -- voices -------------------------------------------------------------------------------

    @property
    def languages(self) -> list[str]:
        return sorted(name for name in self.checkpoint.config.talker.language_ids if "dialect" not in name)

    @property
    def speakers(self) -> list[str]:
        return sorted(self.checkpoint.config.talker.speaker_ids)

    @torch.inference_mode()
    def clone_voice(self, ref_audio: str | os.PathLike | tuple[np.ndarray, int], ref_text: str | None = None,
                    x_vector_only: bool = False) -> VoicePrompt:
        """A cloned voice: ICL (reference codes + transcript) when ref_text is given, else x-vector only."""
        if self.model_type != "base":
            raise ValueError(f"voice cloning needs a Base checkpoint; this one is {self.model_type}")
        use_icl = not x_vector_only and ref_text is not None
        if use_icl and not ref_text.strip():
            raise ValueError("ref_text is empty: give the transcript of the reference audio, or clone x-vector only")
        samples, rate = read_audio(ref_audio)
        wav = torch.from_numpy(resample(samples, rate, SAMPLE_RATE))
        embedding = self.speaker_embedding(wav)
        if not use_icl:
            return VoicePrompt(kind="xvector", speaker_embedding=embedding)
        return VoicePrompt(kind="icl", speaker_embedding=embedding, ref_codes=self.codec.encode(wav).cpu(),
                           ref_text=ref_text.strip())

    @torch.inference_mode()
    def speaker_embedding(self, wav_24k: torch.Tensor) -> torch.Tensor:
        encoder = self.model.speaker_encoder
        param = next(encoder.parameters())
        mels = log_mel(wav_24k.float()[None].to(param.device))
        return encoder(mels.to(param.dtype))[0].float().cpu()

    def design_voice(self, description: str) -> VoicePrompt:
        if self.model_type != "voice_design":
            raise ValueError(f"voice design needs a VoiceDesign checkpoint; this one is {self.model_type}")
        return VoicePrompt.design(description)

    def custom_voice(self, speaker: str, instructions: str | None = None) -> VoicePrompt:
        """A built-in speaker of a CustomVoice checkpoint (any letter case), optionally with a style
        instruction; a blank instruction is none. The 0.6B CustomVoice takes no instruction (the
        official generate_custom_voice leaves it out of the prompt): giving one is a ValueError,
        not an instruction silently ignored."""
        if self.model_type != "custom_voice":
            raise ValueError(f"built-in speakers need a CustomVoice checkpoint; this one is {self.model_type}")
        name = (speaker or "").strip().lower()
        if name not in self.checkpoint.config.talker.speaker_ids:
            raise ValueError(f"unknown speaker {speaker!r}; this checkpoint has: {', '.join(self.speakers) or 'none'}")
        if instructions is not None and not instructions.strip():
            instructions = None
        if instructions is not None and not self.checkpoint.config.speakers_take_instructions:
            raise ValueError(f"the 0.6B CustomVoice checkpoint takes no instructions (speaker {speaker!r}): "
                             "give none, or use a 1.7B CustomVoice checkpoint")
        return VoicePrompt.custom_speaker(name, instructions)

    # -- synthesis ------------------------------------------------------------------------------

    def stream(self, text: str, voice: VoicePrompt, *, language: str | None = "auto",
               sampling: SamplingConfig | None = None, seed: int | None = None, max_frames: int | None = None,
               text_mode: TextMode | None = None, first_chunk_frames: int = 1, max_chunk_frames: int = 8,
               cancel: threading.Event | None = None, min_frames: int = MIN_FRAMES_BEFORE_EOS,
               options: SpeechOptions | None = None,
               before_step: Callable[[], None] | None = None) -> Iterator[AudioChunk]:
        """Audio chunks while frames are generated. Stops at EOS, at the length budget (derived from
        the text, capped at FRAMES_CAP, or max_frames), or between frames once cancel is set.
        EOS is not taken before min_frames (benchmarks set min_frames = max_frames for a fixed length).
        A request's options (seed, frame limit, sampling) come either as `options` or as the
        separate sampling/seed/max_frames arguments. before_step: called on the generating thread
        before the prompt and before each frame step (BatchScheduler's before_step, for one stream).

        Everything about the request is checked before the first chunk is produced."""
        row = self.prepare(text, voice, language=language, sampling=sampling, seed=seed, max_frames=max_frames,
                           text_mode=text_mode, cancel=cancel, min_frames=min_frames, options=options)
        chunks = FrameChunks(first_chunk_frames, max_chunk_frames)
        state = self.decoder_state(voice)
        return self._chunks(self._decoded(row, state, chunks, before_step))

    def prepare(self, text: str, voice: VoicePrompt, *, language: str | None = "auto",
                sampling: SamplingConfig | None = None, seed: int | None = None, max_frames: int | None = None,
                text_mode: TextMode | None = None, cancel: threading.Event | None = None,
                min_frames: int = MIN_FRAMES_BEFORE_EOS, options: SpeechOptions | None = None,
                max_positions: int | None = None) -> Row:
        """One request as a batch Row, checked: its prompt built, its sampling, seed and frame limits
        settled (arguments as stream's), stopping when cancel is set. The one way in for QwenTTS.stream
        and BatchScheduler.stream. max_positions: the positions a batch row holds; a prompt and text
        that do not fit raise PromptTooLong."""
        sampling, seed, max_frames = self.request_settings(options, sampling, seed, max_frames)
        prefill = self.prompts.build(text, voice, language, text_mode, device=self.device)
        most = 8 * FRAMES_CAP
        if max_positions is not None:
            most = max_positions - prefill.embeds.shape[1]
            text_still_to_feed = prefill.trailing_text.shape[1]
            if most <= text_still_to_feed:
                raise PromptTooLong(f"the prompt and text take {prefill.embeds.shape[1] + text_still_to_feed} "
                                    f"positions, more than the {max_positions} a batch row holds: split the text")
        max_frames = frame_limits(prefill.text_tokens, max_frames, min_frames, most=most)
        should_stop = cancel.is_set if cancel is not None else None
        return Row(prefill, sampling, resolve_seed(seed), max_frames, min_frames, should_stop=should_stop,
                   options=options)

    def request_settings(self, options: SpeechOptions | None, sampling: SamplingConfig | None, seed: int | None,
                         max_frames: int | None) -> tuple[SamplingConfig, int | None, int | None]:
        """(sampling, seed, max_frames) of one request: from its options (sampling: this
        checkpoint's defaults with the options' overrides), or from the separate arguments."""
        if options is None:
            return sampling or self.default_sampling, seed, max_frames
        if sampling is not None or seed is not None or max_frames is not None:
            raise ValueError("give a request's settings as options or as sampling/seed/max_frames, not both")
        return (self.default_sampling.with_overrides(**options.sampling.asked()), options.seed,
                options.max_frames)

    def _decoded(self, row: Row, state: DecoderState, chunks: FrameChunks,
                 before_step: Callable[[], None] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """A single stream's (codes, audio) chunks: its frames in the kept single-row batch of
        self.runner and its chunks decoded in the kept single codec slot (on a GPU both replayed as
        CUDA graphs); while another stream holds them (or with the eager runner, or for a text
        longer than SOLO_MAX_LEN), frames in an eager batch of its own, decoded eagerly from
        `state`."""
        talker = self.model.talker
        if self.runner == "eager" or row.positions_needed > SOLO_MAX_LEN or not self._solo_lock.acquire(blocking=False):
            frames = generate_frames(talker, row, before_step=before_step)
            yield from decode_stream(frames, lambda codes: self.codec.decoder(codes[None], state)[0], chunks)
            return
        try:
            frames = generate_frames(talker, row, self._solo_batch(row.positions_needed), before_step)
            slots = self._solo_slots()
            slot = slots.acquire(row, state)
            try:
                yield from decode_stream(frames, lambda codes: slots.decode([slot], codes[None])[0], chunks)
            finally:
                slots.release(slot, row)
        finally:
            self._solo_lock.release()

    def _solo_batch(self, positions: int) -> DecodeBatch:
        """The single-row batch, with room for `positions`: made (its runner prepared: graphs
        captured, steps compiled) on first use, and again larger when a longer request comes. Its
        cache is allocated whole: the sentences it serves are the long ones."""
        if self._solo is None or self._solo.max_len < positions:
            self._solo = None  # free the smaller one's caches and graphs first
            length = max(SOLO_MIN_LEN, 1 << (positions - 1).bit_length())
            self._solo = self.new_batch(1, length, capacity=length)
        return self._solo

    def _solo_slots(self) -> CodecSlots:
        """The single streams' codec slot, made (on a GPU: its graphs captured) on first use."""
        if self._solo_codec is None:
            slots = CodecSlots.for_device(self.codec.decoder, 1)
            slots.prepare()
            self._solo_codec = slots
        return self._solo_codec

    @torch.inference_mode()  # no autograd state in the batch's tensors, nor in the graphs captured
    def new_batch(self, max_rows: int, max_len: int, runner: str | None = None,
                  capacity: int | None = None) -> DecodeBatch:
        """An empty batch whose steps run as `runner` says (this model's runner when None), the
        runner prepared (graphs captured, steps compiled) for this model's default sampling, up to
        the cache capacity it starts with (DecodeBatch)."""
        batch = DecodeBatch(self.model.talker, max_rows, max_len, capacity=capacity)
        batch.runner = make_runner(runner or self.runner, batch, self.compile_steps,
                                   warm_plans=(step_plan_of(self.model.talker, self.default_sampling),))
        batch.runner.prepare(batch)
        return batch

    @staticmethod
    def _chunks(decoded: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[AudioChunk]:
        first = 0
        for codes, audio in decoded:
            samples, host_codes = read_to_host(audio.float(), codes)
            yield AudioChunk(samples=samples, codes=host_codes, first_frame=first)
            first += codes.shape[0]

    def synthesize(self, text: str, voice: VoicePrompt, **kwargs) -> tuple[np.ndarray, np.ndarray]:
        """The whole utterance at once: (samples, codes (frames, 16))."""
        chunks = list(self.stream(text, voice, max_chunk_frames=64, **kwargs))
        groups = self.checkpoint.config.talker.num_code_groups
        if not chunks:
            return np.zeros(0, dtype=np.float32), np.zeros((0, groups), dtype=np.int64)
        return np.concatenate([c.samples for c in chunks]), np.concatenate([c.codes for c in chunks])

    @torch.inference_mode()
    def decode(self, codes: np.ndarray | torch.Tensor, prefix: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
        """Whole-utterance decode of codes (frames, 16); a prefix (ICL reference) conditions but is not returned."""
        state = self.codec.decoder.new_state()
        if prefix is not None and len(prefix):
            self.codec.decoder(torch.as_tensor(prefix, device=self.device)[None], state)
        return self.codec.decoder(torch.as_tensor(codes, device=self.device)[None], state)[0].float().cpu().numpy()

    @torch.inference_mode()
    def decoder_state(self, voice: VoicePrompt) -> DecoderState:
        """A fresh decoder state, made on the current CUDA stream; for ICL, primed with the reference
        codes (computed once per voice), as the official code decodes the reference and the
        generated codes together."""
        if voice.kind != "icl":
            return self.codec.decoder.new_state()
        key = hashlib.sha1(voice.ref_codes.cpu().numpy().tobytes()).hexdigest()
        with self._primed_lock:
            primed = self._primed.get(key)
            if primed is not None:
                self._primed.move_to_end(key)
        if primed is None:
            primed = self.codec.decoder.new_state()
            self.codec.decoder(voice.ref_codes.to(self.device)[None], primed)
            self._wait_for_current_stream()  # other threads' streams read it once it is shared
            with self._primed_lock:
                self._primed[key] = primed
                while len(self._primed) > 32:
                    self._primed.popitem(last=False)
        state = primed.clone()
        self._wait_for_current_stream()  # the clone has read `primed` before anyone may evict and free it
        return state

    def device_memory(self) -> str | None:
        """What the process holds on the GPU now and at its peak (None off CUDA): the figure a user
        sizing a card wants, logged once the server has warmed up (batches and graphs made)."""
        if self.device.type != "cuda":
            return None
        torch.cuda.synchronize(self.device)
        gib = 2**30
        return (f"GPU memory: {torch.cuda.memory_allocated(self.device) / gib:.2f} GiB allocated, "
                f"{torch.cuda.memory_reserved(self.device) / gib:.2f} GiB reserved, "
                f"peak {torch.cuda.max_memory_allocated(self.device) / gib:.2f} GiB")

    def _wait_for_current_stream(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()


HOST = torch.device("cpu")
# Parts used only to build prompts (the 0.6 GB text embedding table) or to clone a voice (the
# speaker and speech encoders) stay in host memory; only their small results go to the device.
MODEL_ON_HOST = ("talker.model.text_embedding.", "speaker_encoder.")
CODEC_ON_HOST = ("encoder.",)


def resolve_int8_prompts(int8_prompts: str | None, quantize: str, device: torch.device) -> bool:
    """auto: prompts (many rows per linear) run int8 x int8 where the weights are int8 on a CPU with
    an integer matmul (quantize.cpu_int8_matmul); off: a dense matmul on dequantized weights, as
    before (and no 7-bit weight copy on CPUs whose integer matmul saturates)."""
    value = "auto" if int8_prompts in (None, "") else str(int8_prompts).strip().lower()
    if value not in INT8_PROMPT_CHOICES:
        raise ValueError(f"int8_prompts must be one of {', '.join(INT8_PROMPT_CHOICES)}, not {int8_prompts!r}")
    return value == "auto" and quantize == "int8" and device.type == "cpu" and cpu_int8_matmul() != "none"


def model_placement(name: str, device: torch.device, dtype: torch.dtype) -> tuple[torch.device, torch.dtype]:
    """Where a model weight lives and in which dtype. The speaker encoder runs once per voice:
    float32, for the best embedding."""
    return (HOST if name.startswith(MODEL_ON_HOST) else device,
            torch.float32 if name.startswith("speaker_encoder.") else dtype)


def codec_placement(name: str, device: torch.device, dtype: torch.dtype) -> tuple[torch.device, torch.dtype]:
    """The decoder in `dtype` on the device; the encoder (Base only, once per voice) float32 on the host."""
    return (HOST, torch.float32) if name.startswith(CODEC_ON_HOST) else (device, dtype)


def _load_model(checkpoint: Checkpoint, device: torch.device, dtype: torch.dtype) -> Qwen3TTSModel:
    with torch.device("meta"):
        model = Qwen3TTSModel(checkpoint.config)
    weights = load_safetensors(checkpoint.weight_files, device=HOST)  # each weight then goes once to its place
    wanted = set(model.state_dict())
    missing = sorted(wanted - set(weights))
    if missing:
        raise CheckpointError(f"{checkpoint.path}: model.safetensors lacks {len(missing)} tensors, e.g. {missing[:3]}")
    # Weights of parts this engine does not run (none in released checkpoints) are skipped.
    state = {}
    for name in wanted:
        place, place_dtype = model_placement(name, device, dtype)
        state[name] = weights[name].to(device=place, dtype=place_dtype)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise CheckpointError(f"{checkpoint.path}: weights do not fit config.json: {err}") from err
    fuse_weights(model.talker)  # q/k/v and gate/up concatenated: fewer, longer matmuls per step
    return model.eval().requires_grad_(False)  # inference only: no step may record an autograd graph


# The talker's linears that prompts go through (its decoder layers and the text projection); the
# code predictor's see a few rows per step, so they never need prompt weights of their own.
PROMPT_LINEARS = ("model.layers.", "text_projection.")


def _quantize_model(model: Qwen3TTSModel, quantize: str, dtype: torch.dtype, int8_prompts: bool = False) -> None:
    """Weight-only int8 for the talker and its code predictor (what every frame reads); the speaker
    encoder, run once per voice, keeps its float32 weights."""
    if quantize == "int8":
        quantize_int8(model.talker, dtype, lambda name: int8_prompts and name.startswith(PROMPT_LINEARS))


def _load_codec(checkpoint: Checkpoint, device: torch.device, dtype: torch.dtype, with_encoder: bool) -> SpeechCodec:
    with torch.device("meta"):
        codec = SpeechCodec(checkpoint.codec, with_encoder=with_encoder)
    weights = load_safetensors(checkpoint.codec_weight_files, device=HOST)
    state = {}
    for name in codec.state_dict():
        if name not in weights:
            raise CheckpointError(f"{checkpoint.path}/speech_tokenizer/model.safetensors lacks {name}")
        place, place_dtype = codec_placement(name, device, dtype)
        state[name] = weights[name].to(device=place, dtype=place_dtype)
    try:
        codec.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise CheckpointError(f"{checkpoint.path}/speech_tokenizer: weights do not fit its config.json: {err}") from err
    codec.eval().requires_grad_(False)
    codec.decoder.build_tables()
    return codec


def _load_tokenizer(checkpoint: Checkpoint):
    # Qwen2's byte-level BPE from vocab.json + merges.txt (+ the special tokens of
    # tokenizer_config.json). Named directly: AutoTokenizer would consult config.json, whose
    # qwen3_tts model type transformers does not know.
    from transformers import Qwen2Tokenizer

    try:
        return Qwen2Tokenizer.from_pretrained(str(checkpoint.path))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{checkpoint.path}: cannot load the text tokenizer: {err}") from err
