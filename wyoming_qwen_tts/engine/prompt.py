"""Voice prompts and the talker's prefill sequence.

A VoicePrompt is what a voice is, computed once and reused: the speaker embedding and
reference codes of a cloned voice (plus its transcript for ICL), the description of a designed
voice, or the name of a built-in CustomVoice speaker. It saves to safetensors (never pickle).

The prefill follows the official layout, position by position (text part + codec part summed):
    [instruct tokens]                                    design / instructed custom voice only
    <|im_start|> assistant \\n                            3 text positions, no codec part
    tts_pad + think/nothink, think_bos, [lang], think_eos, [speaker], tts_bos + codec_pad
then either
    per-frame text:  text[0] + codec_bos; the remaining text tokens then tts_eos are added to
                     the generated frames one per frame, tts_pad after that
    prefilled text:  every text token + codec_pad, tts_eos + codec_pad, tts_pad + codec_bos
or, for ICL, the reference transcript and the text aligned against codec_bos + reference frames.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from .checkpoint import ModelConfig
from .devices import side_stream, to_device
from .languages import normalize_language
from .talker import Talker

VoiceKind = Literal["icl", "xvector", "design", "speaker"]
TextMode = Literal["per_frame", "prefill"]

PROMPT_FORMAT = "wyoming-qwen-tts voice prompt v1"


@dataclass
class VoicePrompt:
    kind: VoiceKind
    speaker_embedding: torch.Tensor | None = None  # (hidden,) float32
    ref_codes: torch.Tensor | None = None  # (frames, groups) int64, ICL only
    ref_text: str | None = None  # ICL only
    instruct: str | None = None  # design, or a custom-voice instruction
    speaker: str | None = None  # custom voice speaker name

    def __post_init__(self) -> None:
        needs = {
            "icl": ("speaker_embedding", "ref_codes", "ref_text"),
            "xvector": ("speaker_embedding",),
            "design": ("instruct",),
            "speaker": ("speaker",),
        }
        if self.kind not in needs:
            raise ValueError(f"unknown voice kind {self.kind!r}")
        missing = [name for name in needs[self.kind] if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.kind} voice prompt needs {', '.join(missing)}")
        if self.kind == "icl" and not self.ref_text.strip():
            raise ValueError("an ICL voice needs a non-empty transcript of its reference audio")
        if self.kind == "design" and not self.instruct.strip():
            raise ValueError("a designed voice needs a non-empty description")

    @classmethod
    def design(cls, description: str) -> "VoicePrompt":
        return cls(kind="design", instruct=description)

    @classmethod
    def custom_speaker(cls, name: str, instruct: str | None = None) -> "VoicePrompt":
        """A CustomVoice checkpoint's built-in speaker, with an optional style instruction."""
        return cls(kind="speaker", speaker=name, instruct=instruct)

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        tensors = {}
        if self.speaker_embedding is not None:
            tensors["speaker_embedding"] = self.speaker_embedding.detach().float().cpu().contiguous()
        if self.ref_codes is not None:
            tensors["ref_codes"] = self.ref_codes.detach().to(torch.int64).cpu().contiguous()
        meta = {"format": PROMPT_FORMAT, "kind": self.kind,
                "fields": json.dumps({"ref_text": self.ref_text, "instruct": self.instruct, "speaker": self.speaker})}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "VoicePrompt":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        except (OSError, SafetensorError) as err:
            raise ValueError(f"{path} is not a readable voice prompt: {err}") from err
        if meta.get("format") != PROMPT_FORMAT:
            raise ValueError(f"{path} is not a voice prompt saved by wyoming-qwen-tts")
        fields = json.loads(meta.get("fields", "{}"))
        return cls(kind=meta["kind"], speaker_embedding=tensors.get("speaker_embedding"),
                   ref_codes=tensors.get("ref_codes"), **fields)


@dataclass
class Prefill:
    """What the decode loop needs: the prompt, text still to feed per frame, and the pad."""

    embeds: torch.Tensor  # (1, L, H)
    trailing_text: torch.Tensor  # (1, N, H): added to generated frames 0..N-1
    tts_pad: torch.Tensor  # (1, 1, H): added after the trailing text runs out
    text_tokens: int  # tokens of the text to speak (for the length budget)
    ready: "torch.cuda.Event | None" = None  # recorded on the builder's side stream, on CUDA

    def wait_here(self) -> None:
        """Make the current CUDA stream wait until the prompt is built (on the builder's side stream)
        and mark its tensors used there, so their memory is not reused before that stream read them."""
        if self.ready is None:
            return
        stream = torch.cuda.current_stream(self.embeds.device)
        stream.wait_event(self.ready)
        for tensor in (self.embeds, self.trailing_text, self.tts_pad):
            tensor.record_stream(stream)


VOICES_KEPT = 64  # voices whose fixed prompt part stays on the device


class PromptBuilder:
    """Prefills from text and voices. On CUDA a prompt is built on a side stream of its own, with
    pinned copies from the host, so that building it never waits for the batch's step in flight;
    each voice's fixed part (speaker embedding, reference frames' embeddings) is kept on the device."""

    def __init__(self, talker: Talker, cfg: ModelConfig, tokenizer) -> None:
        self.talker = talker
        self.cfg = cfg
        self.tokenizer = tokenizer
        self._voices: OrderedDict[tuple, tuple[weakref.ref, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    def _voice_part(self, voice: VoicePrompt, name: str, device: torch.device, make) -> torch.Tensor:
        """make() for this voice object, made once (per device) and kept for the next prompts."""
        key = (id(voice), name, device)
        with self._lock:
            kept = self._voices.get(key)
            if kept is not None and kept[0]() is voice:
                self._voices.move_to_end(key)
                return kept[1]
        value = make()
        with self._lock:
            self._voices[key] = (weakref.ref(voice), value)
            while len(self._voices) > VOICES_KEPT:
                self._voices.popitem(last=False)
        return value

    def tokenize(self, text: str) -> torch.Tensor:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return torch.tensor([ids], dtype=torch.long)

    def default_text_mode(self, voice: VoicePrompt) -> TextMode:
        return "per_frame" if voice.kind in ("icl", "xvector") else "prefill"

    def _codec(self, ids: list[int], device: torch.device) -> torch.Tensor:
        return self.talker.embed_codec(to_device(torch.tensor([ids], dtype=torch.long), device))

    def _language_id(self, language: str, voice: VoicePrompt) -> int | None:
        talker = self.cfg.talker
        language_id = None
        if language != "auto":
            if language not in talker.language_ids:
                raise ValueError(f"language {language!r} is not supported by this checkpoint "
                                 f"(supported: auto, {', '.join(sorted(talker.language_ids))})")
            language_id = talker.language_ids[language]
        if voice.kind == "speaker" and language in ("chinese", "auto"):
            dialect = talker.speaker_dialects.get(voice.speaker.lower())
            if dialect:
                language_id = talker.language_ids[dialect]
        return language_id

    def _speaker_embedding(self, voice: VoicePrompt, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        if voice.kind in ("icl", "xvector"):
            return self._voice_part(voice, f"speaker_embedding {dtype}", device,
                                    lambda: to_device(voice.speaker_embedding.to(dtype), device).view(1, 1, -1))
        if voice.kind == "speaker":
            ids = self.cfg.talker.speaker_ids
            name = voice.speaker.lower()
            if name not in ids:
                raise ValueError(f"speaker {voice.speaker!r} is not in this checkpoint "
                                 f"(available: {', '.join(sorted(ids)) or 'none'})")
            return self._codec([ids[name]], device)
        return None

    @torch.inference_mode()
    def build(self, text: str, voice: VoicePrompt, language: str = "auto", text_mode: TextMode | None = None,
              device: torch.device | None = None) -> Prefill:
        """The prefill of `text` in `voice`; on CUDA made on the side stream (Prefill.wait_here)."""
        device = device or self.talker.model.norm.weight.device
        if device.type != "cuda":
            return self._build(text, voice, language, text_mode, device)
        stream = side_stream("prompts", device)
        with torch.cuda.stream(stream):
            prefill = self._build(text, voice, language, text_mode, device)
            prefill.ready = torch.cuda.Event()
            prefill.ready.record(stream)
        return prefill

    def _build(self, text: str, voice: VoicePrompt, language: str, text_mode: TextMode | None,
               device: torch.device) -> Prefill:
        cfg, talker_cfg = self.cfg, self.cfg.talker
        dtype = self.talker.model.norm.weight.dtype
        language = normalize_language(language)
        text_mode = text_mode or self.default_text_mode(voice)
        self._check_voice_fits_model(voice)

        # Text ids stay in host memory, with the text embedding table (the loader keeps it there).
        ids = self.tokenize(f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n")
        role_ids, text_ids = ids[:, :3], ids[:, 3:-5]
        if text_ids.shape[1] == 0:
            raise ValueError("nothing to speak: the text is empty")
        special = torch.tensor([[cfg.tts_bos_id, cfg.tts_eos_id, cfg.tts_pad_id]])
        tts_bos, tts_eos, tts_pad = self.talker.embed_text(special).chunk(3, dim=1)

        language_id = self._language_id(language, voice)
        if language_id is None:
            tags = [talker_cfg.codec_nothink_id, talker_cfg.codec_think_bos_id, talker_cfg.codec_think_eos_id]
        else:
            tags = [talker_cfg.codec_think_id, talker_cfg.codec_think_bos_id, language_id,
                    talker_cfg.codec_think_eos_id]
        codec_prefix = [self._codec(tags, device)]
        speaker = self._speaker_embedding(voice, device, dtype)
        if speaker is not None:
            codec_prefix.append(speaker)
        codec_prefix.append(self._codec([talker_cfg.codec_pad_id, talker_cfg.codec_bos_id], device))
        codec_prefix = torch.cat(codec_prefix, dim=1)
        text_side = torch.cat((tts_pad.expand(-1, codec_prefix.shape[1] - 2, -1), tts_bos), dim=1)

        parts = []
        # QwenTTS.custom_voice refuses an instruction for a 0.6B speaker; one that comes another way
        # (a saved prompt) is left out, as the official generate_custom_voice does.
        if voice.instruct and (voice.kind != "speaker" or cfg.speakers_take_instructions):
            instruct_ids = self.tokenize(f"<|im_start|>user\n{voice.instruct}<|im_end|>\n")
            parts.append(self.talker.embed_text(instruct_ids))
        parts += [self.talker.embed_text(role_ids), text_side + codec_prefix[:, :-1]]
        codec_bos = codec_prefix[:, -1:]

        if voice.kind == "icl":
            body, trailing = self._icl_body(voice, text_ids, tts_pad, tts_eos, text_mode, device)
        elif text_mode == "prefill":
            text_embeds = torch.cat((self.talker.embed_text(text_ids), tts_eos), dim=1)
            pads = self._codec([talker_cfg.codec_pad_id] * text_embeds.shape[1], device)
            body = torch.cat((text_embeds + pads, tts_pad + codec_bos), dim=1)
            trailing = tts_pad
        else:
            body = self.talker.embed_text(text_ids[:, :1]) + codec_bos
            trailing = torch.cat((self.talker.embed_text(text_ids[:, 1:]), tts_eos), dim=1)
        parts.append(body)
        return Prefill(embeds=torch.cat(parts, dim=1), trailing_text=trailing, tts_pad=tts_pad,
                       text_tokens=int(text_ids.shape[1]))

    def _icl_body(self, voice: VoicePrompt, text_ids: torch.Tensor, tts_pad: torch.Tensor, tts_eos: torch.Tensor,
                  text_mode: TextMode, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        talker_cfg = self.cfg.talker
        ref_ids = self.tokenize(f"<|im_start|>assistant\n{voice.ref_text}<|im_end|>\n")[:, 3:-2]
        text_embeds = torch.cat((self.talker.embed_text(torch.cat((ref_ids, text_ids), dim=1)), tts_eos), dim=1)
        ref_frames = self._voice_part(voice, "ref_frames", device,
                                      lambda: self.talker.embed_frames(to_device(voice.ref_codes, device)))
        codec_embeds = torch.cat((self._codec([talker_cfg.codec_bos_id], device), ref_frames.unsqueeze(0)), dim=1)
        text_len, codec_len = text_embeds.shape[1], codec_embeds.shape[1]
        if text_mode == "prefill":
            pads = self._codec([talker_cfg.codec_pad_id] * text_len, device)
            return torch.cat((text_embeds + pads, codec_embeds + tts_pad), dim=1), tts_pad
        if text_len > codec_len:
            return text_embeds[:, :codec_len] + codec_embeds, text_embeds[:, codec_len:]
        padded = torch.cat((text_embeds, tts_pad.expand(-1, codec_len - text_len, -1)), dim=1)
        return padded + codec_embeds, tts_pad

    def _check_voice_fits_model(self, voice: VoicePrompt) -> None:
        model_type = self.cfg.model_type
        allowed = {"base": ("icl", "xvector"), "voice_design": ("design",), "custom_voice": ("speaker",)}[model_type]
        if voice.kind not in allowed:
            raise ValueError(f"a {voice.kind} voice cannot be spoken by a {model_type} checkpoint "
                             f"(it takes {' or '.join(allowed)} voices)")
        if voice.kind in ("icl", "xvector") and voice.speaker_embedding.shape[-1] != self.cfg.talker.hidden_size:
            raise ValueError("this voice prompt was made for a model of another size")
