"""What a server holds on the GPU for one loaded 1.7B Base model with its default batch, computed
from the published shapes with the engine's own classes on the meta device (nothing allocated):
the weights the loader places on the device, the codec decoder and its tables, the batch (KV
caches of the talker and the code predictor for every row, the step buffers of a graph runner;
the talker's cache and the staged texts as the batch starts, typically, and grown to max_len for
every row, the worst case and the bound, with what a growth holds at once),
the codec's slots (a decoder state per row, the static buffers of every graph shape) plus the
primed states of cloned voices, and what one codec decode of the largest group at least holds
while it runs (its largest layer's input and output). The GPU run (benchmarks/gpu_run.sh check)
measures the real peak, CUDA graphs included."""

import inspect
import json
from pathlib import Path

import pytest
import torch

from wyoming_qwen_tts.engine.checkpoint import parse_codec_config, parse_model_config
from wyoming_qwen_tts.engine.codec import CodecDecoder, SpeechCodec
from wyoming_qwen_tts.engine.codec_slots import FRAME_BUCKETS, MAX_GROUP_ROWS, ROW_BUCKETS, CodecSlots
from wyoming_qwen_tts.engine.engine import HOST, codec_placement, model_placement
from wyoming_qwen_tts.engine.engine import SOLO_MIN_LEN
from wyoming_qwen_tts.engine.generate import DecodeBatch
from wyoming_qwen_tts.engine.runners import BucketedRunner
from wyoming_qwen_tts.engine.scheduler import BatchScheduler
from wyoming_qwen_tts.engine.talker import Qwen3TTSModel

PUBLISHED = Path(__file__).resolve().parents[1] / "tools" / "published_configs"
GPU_BUDGET_BYTES = 6 * 10**9
ACCELERATOR = torch.device("cuda")  # only compared with where the loader puts a weight; never allocated
ROWS = 8  # the server's default --max-batch
PRIMED_VOICES = 32  # cloned voices whose primed codec state QwenTTS keeps on the device


def _tensors(obj, seen: set[int] | None = None, depth: int = 0) -> list[torch.Tensor]:
    """Every tensor an object holds in its attributes (modules excluded: their weights are counted
    as weights), each once."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        if id(obj) in seen:
            return []
        seen.add(id(obj))
        return [obj]
    if isinstance(obj, torch.nn.Module) or depth > 4:
        return []
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        items = list(obj)
    elif hasattr(obj, "__dict__"):
        items = list(vars(obj).values())
    else:
        return []
    return [tensor for item in items for tensor in _tensors(item, seen, depth + 1)]


def _bytes(tensors) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def codec_decode_bytes(decoder: CodecDecoder, rows: int, frames: int) -> int:
    """At least what a decode of (rows, frames) holds at once: the largest input plus output of one
    layer (the graph's memory pool holds that and more). Meta tensors: nothing is allocated."""
    largest = 0

    def record(_module, args, out) -> None:
        nonlocal largest
        largest = max(largest, _bytes([a for a in args if isinstance(a, torch.Tensor)] + [out]))

    hooks = [m.register_forward_hook(record) for m in decoder.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            decoder(torch.zeros(rows, frames, decoder.cfg.num_quantizers, dtype=torch.int64, device="meta"),
                    decoder.new_state(rows))
    finally:
        for hook in hooks:
            hook.remove()
    return largest


def growth_bytes(batch: DecodeBatch) -> int:
    """What growing the batch to max_len holds beyond the grown buffers, at most: a cache growth
    holds the old keys and values and the new keys at once (KVCache.grow), a text table growth
    the old table and the new one; they run one after the other."""
    per_position = _bytes(_tensors(batch.cache)) // batch.cache.capacity  # keys + values, every row
    per_column = _bytes([batch.text_table]) // batch.text_table.shape[1]

    def extra(steps, final_bytes, moment):
        return max([moment(old, new) - final_bytes for old, new in zip(steps, steps[1:])], default=0)

    cache = extra(batch.kv_steps, batch.max_len * per_position,
                  lambda old, new: old * per_position + new * per_position // 2)
    texts = extra(batch.text_steps, batch.max_len * per_column, lambda old, new: (old + new) * per_column)
    return max(cache, texts, 0)


def gpu_bytes(config_name: str = "1.7B-Base", rows: int = ROWS, grown: bool = False) -> dict[str, int]:
    """The parts, with the batch as it starts, or (grown) with every row's cache and text table at
    max_len and what the growth held at once."""
    dtype, codec_dtype = torch.bfloat16, torch.float32  # QwenTTS's defaults on a GPU
    max_len = inspect.signature(BatchScheduler).parameters["max_len"].default
    with torch.device("meta"):
        model = Qwen3TTSModel(parse_model_config(json.loads((PUBLISHED / f"{config_name}.json").read_text())))
        codec = SpeechCodec(parse_codec_config(json.loads((PUBLISHED / "speech_tokenizer.json").read_text())),
                            with_encoder=True)

    def placed(module: torch.nn.Module, placement) -> int:
        total = 0
        for name, tensor in module.state_dict().items():
            device, placed_dtype = placement(name, ACCELERATOR, dtype if module is model else codec_dtype)
            total += tensor.numel() * placed_dtype.itemsize if device == ACCELERATOR else 0
        return total

    talker = model.talker.to(dtype)
    batch = DecodeBatch(talker, rows, max_len)
    batch.runner = BucketedRunner(batch)  # the static buffers a CUDA graph runner replays on
    if grown:
        batch.grow(max_len, max_len)
    # Single streams (sentences too long for a batch row) run in a batch of their own, made at the
    # server's warm-up at its smallest size, allocated whole; a longer sentence makes a larger one
    # (up to SOLO_MAX_LEN).
    solo = DecodeBatch(talker, 1, SOLO_MIN_LEN, capacity=SOLO_MIN_LEN)
    solo.runner = BucketedRunner(solo)
    codec.decoder.build_tables()
    # The scheduler's CodecSlots on a GPU (CodecSlots.for_device, without the CUDA graph handle).
    slots = CodecSlots(codec.decoder, rows, max_group=MAX_GROUP_ROWS, row_buckets=ROW_BUCKETS,
                       frame_buckets=FRAME_BUCKETS)
    slots.allocate()
    # Single streams decode in a codec slot of their own, with graphs in a pool of their own.
    solo_slots = CodecSlots(codec.decoder, 1, max_group=MAX_GROUP_ROWS, row_buckets=ROW_BUCKETS,
                            frame_buckets=FRAME_BUCKETS)
    solo_slots.allocate()
    primed = [codec.decoder.new_state(1) for _ in range(PRIMED_VOICES)]
    parts = {
        "model weights": placed(model, model_placement),
        "codec weights": placed(codec, codec_placement),
        "codebook tables": _bytes([codec.decoder.quantizer.rvq_first.tables, codec.decoder.quantizer.rvq_rest.tables]),
        "talker KV cache": _bytes(_tensors(batch.cache)),
        "batch buffers": _bytes(_tensors(batch)) - _bytes(_tensors(batch.cache)),
        "codec slots": _bytes(_tensors(slots)),
        "primed voices": _bytes(_tensors(primed)),
        "codec decode": codec_decode_bytes(codec.decoder, min(rows, MAX_GROUP_ROWS), max(FRAME_BUCKETS)),
        "single-stream batch": _bytes(_tensors(solo)),
        "single-stream codec": _bytes(_tensors(solo_slots)) + codec_decode_bytes(codec.decoder, 1, max(FRAME_BUCKETS)),
    }
    if grown:
        parts["growth, held at once"] = growth_bytes(batch)
    return parts


def _print(title: str, parts: dict[str, int]) -> int:
    print(f"\n{title}\n" + "\n".join(f"{name:20s} {size / 2**30:7.3f} GiB" for name, size in parts.items()))
    total = sum(parts.values())
    print(f"{'total':20s} {total / 2**30:7.3f} GiB ({total / 1e9:.2f} GB)")
    return total


def test_a_loaded_1_7b_model_with_its_default_batch_fits_6_gb():
    """Typically the batch keeps its first 512 positions per row; the bound is every row grown to
    max_len (8 x 1536), with what the last growth held at once."""
    typical = gpu_bytes()
    worst = gpu_bytes(grown=True)
    typical_total = _print("as the batch starts (8 rows x 512 positions, 64 text columns)", typical)
    worst_total = _print("grown to max_len (8 rows x 1536 positions and text columns)", worst)
    assert worst["talker KV cache"] > 1e9 and worst["model weights"] > 2.5e9  # the big parts are counted
    assert worst["talker KV cache"] == 3 * typical["talker KV cache"]  # 1536 positions against 512
    assert worst["growth, held at once"] > 0
    assert typical_total < worst_total <= GPU_BUDGET_BYTES


def test_prompt_and_cloning_weights_stay_in_host_memory():
    """The text embedding table builds prompts and the encoders clone voices: the device gets
    their small results only."""
    dtype = torch.bfloat16
    assert model_placement("talker.model.text_embedding.weight", ACCELERATOR, dtype) == (HOST, dtype)
    assert model_placement("speaker_encoder.fc.weight", ACCELERATOR, dtype) == (HOST, torch.float32)
    assert model_placement("talker.model.codec_embedding.weight", ACCELERATOR, dtype) == (ACCELERATOR, dtype)
    assert model_placement("talker.text_projection.linear_fc1.weight", ACCELERATOR, dtype) == (ACCELERATOR, dtype)
    assert codec_placement("encoder.quantizer.semantic_residual_vector_quantizer.layers.0.codebook.embed_sum",
                           ACCELERATOR, torch.float32) == (HOST, torch.float32)
    assert codec_placement("decoder.pre_conv.conv.weight", ACCELERATOR, torch.float32) == (ACCELERATOR, torch.float32)


@pytest.mark.parametrize("config_name", ["0.6B-Base", "1.7B-Base"])
def test_every_published_weight_has_a_place(config_name):
    with torch.device("meta"):
        model = Qwen3TTSModel(parse_model_config(json.loads((PUBLISHED / f"{config_name}.json").read_text())))
    on_host = [name for name in model.state_dict() if model_placement(name, ACCELERATOR, torch.bfloat16)[0] == HOST]
    assert "talker.model.text_embedding.weight" in on_host
    assert all(name.startswith(("talker.model.text_embedding.", "speaker_encoder.")) for name in on_host)


def test_the_loader_places_weights_by_that_rule_and_prompts_are_built_for_the_device():
    """The tiny checkpoint loaded for the meta device (an accelerator that allocates nothing):
    the table and the encoders land in host memory, the rest on the device, no weight requires
    grad, and a prompt is built from host ids into device embeddings."""
    from wyoming_qwen_tts.engine import QwenTTS
    from wyoming_qwen_tts.engine.prompt import VoicePrompt

    from .conftest import FIXTURES

    tts = QwenTTS(FIXTURES / "tiny-base", device="meta", dtype="bfloat16")
    for module, placement in ((tts.model, model_placement), (tts.codec, codec_placement)):
        for name, param in module.named_parameters():
            expected = placement(name, torch.device("meta"), param.dtype)[0]
            assert param.device == expected and not param.requires_grad, name
    assert tts.model.talker.model.text_embedding.weight.device == HOST
    hidden = tts.checkpoint.config.talker.hidden_size
    voice = VoicePrompt(kind="icl", speaker_embedding=torch.zeros(hidden),
                        ref_codes=torch.zeros(5, 16, dtype=torch.long), ref_text="The quick brown fox.")
    prefill = tts.prompts.build("Hello there.", voice, "english", device=tts.device)
    assert prefill.embeds.device.type == "meta" and prefill.trailing_text.device.type == "meta"
