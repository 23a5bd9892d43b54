"""Loading: the official layout from a directory or a hub id, the published full-size shapes,
and clear refusals."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from wyoming_qwen_tts.engine import CheckpointError, QwenTTS
from wyoming_qwen_tts.engine.checkpoint import load_checkpoint, parse_codec_config, parse_model_config, resolve_model_dir
from wyoming_qwen_tts.engine.codec import SpeechCodec
from wyoming_qwen_tts.engine.talker import Qwen3TTSModel

from .conftest import FIXTURES

PUBLISHED = Path(__file__).parents[1] / "tools" / "published_configs"


def _skeleton(name):
    cfg = parse_model_config(json.loads((PUBLISHED / name).read_text()))
    with torch.device("meta"):
        return cfg, Qwen3TTSModel(cfg)


@pytest.mark.parametrize("name, hidden, ffn", [("1.7B-Base.json", 2048, 6144), ("0.6B-Base.json", 1024, 3072),
                                                ("1.7B-VoiceDesign.json", 2048, 6144)])
def test_published_configs_build_the_published_shapes(name, hidden, ffn):
    cfg, model = _skeleton(name)
    state = model.state_dict()
    assert state["talker.model.text_embedding.weight"].shape == (151936, 2048)
    assert state["talker.text_projection.linear_fc2.weight"].shape == (hidden, 2048)
    assert state["talker.model.codec_embedding.weight"].shape == (3072, hidden)
    assert state["talker.model.layers.27.self_attn.q_proj.weight"].shape == (16 * 128, hidden)
    assert state["talker.model.layers.27.self_attn.k_proj.weight"].shape == (8 * 128, hidden)
    assert state["talker.model.layers.0.mlp.gate_proj.weight"].shape == (ffn, hidden)
    assert state["talker.code_predictor.model.codec_embedding.14.weight"].shape == (2048, hidden)
    assert state["talker.code_predictor.lm_head.14.weight"].shape == (2048, 1024)
    assert state["talker.code_predictor.model.layers.4.self_attn.q_proj.weight"].shape == (2048, 1024)
    assert "talker.code_predictor.model.layers.5.mlp.up_proj.weight" not in state
    if cfg.model_type == "base":
        assert state["speaker_encoder.fc.weight"].shape == (hidden, 3072, 1)
    else:
        assert not any(k.startswith("speaker_encoder.") for k in state)


def test_published_codec_config_builds_and_keeps_1920_samples_per_frame():
    codec_cfg = parse_codec_config(json.loads((PUBLISHED / "speech_tokenizer.json").read_text()))
    with torch.device("meta"):
        codec = SpeechCodec(codec_cfg, with_encoder=True)
    state = codec.state_dict()
    assert codec_cfg.decoder.samples_per_frame == 1920
    assert state["decoder.pre_transformer.layers.7.self_attn.q_proj.weight"].shape == (1024, 512)
    assert state["decoder.quantizer.rvq_rest.vq.layers.14._codebook.embedding_sum"].shape == (2048, 256)
    assert state["decoder.decoder.6.conv.weight"].shape == (1, 1536 // 16, 7)
    assert state["encoder.quantizer.acoustic_residual_vector_quantizer.layers.30.codebook.embed_sum"].shape == (2048, 256)


def test_missing_files_are_named(tmp_path):
    broken = tmp_path / "ckpt"
    shutil.copytree(FIXTURES / "tiny-base", broken)
    (broken / "merges.txt").unlink()
    (broken / "speech_tokenizer" / "preprocessor_config.json").unlink()
    with pytest.raises(CheckpointError, match="missing merges.txt, speech_tokenizer/preprocessor_config.json"):
        load_checkpoint(broken)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    broken = tmp_path / "ckpt"
    shutil.copytree(FIXTURES / "tiny-base", broken)
    config = json.loads((broken / "config.json").read_text())
    config["talker_config"]["num_hidden_layers"] = 3
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="lacks .* tensors"):
        QwenTTS(broken, device="cpu")


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(tokenizer_type="qwen3_tts_tokenizer_25hz"), "only the 12 Hz tokenizer"),
    (lambda c: c.update(tts_model_type="mystery"), "tts_model_type 'mystery'"),
    (lambda c: c["talker_config"].update(rope_scaling={"rope_type": "yarn", "factor": 4}), "rope_type 'yarn'"),
])
def test_unsupported_configs_are_refused(change, message):
    config = json.loads((FIXTURES / "tiny-base" / "config.json").read_text())
    change(config)
    with pytest.raises(CheckpointError, match=message):
        parse_model_config(config)


def test_speaker_encoder_model_type_key_is_tolerated():
    """The official config class writes speaker_encoder_config.model_type but cannot read it back."""
    config = json.loads((FIXTURES / "tiny-base" / "config.json").read_text())
    config["speaker_encoder_config"]["model_type"] = "qwen3_tts_speaker_encoder"
    assert parse_model_config(config).speaker_encoder.enc_dim == 64


def test_custom_voice_config_keeps_speakers_and_dialects():
    """tiny-custom is written by the official config class: spk_id / spk_is_dialect as released."""
    cfg = parse_model_config(json.loads((FIXTURES / "tiny-custom" / "config.json").read_text()))
    assert (cfg.model_type, cfg.speaker_encoder) == ("custom_voice", None)
    assert cfg.talker.speaker_ids["serena"] == 3066 - 1792
    assert cfg.talker.speaker_dialects == {"serena": False, "ryan": False, "aiden": False,
                                           "dylan": "beijing_dialect", "eric": "sichuan_dialect"}
    assert cfg.talker.language_ids["beijing_dialect"] == 2074 - 1792


def test_not_a_directory_nor_a_hub_id(tmp_path):
    with pytest.raises(CheckpointError, match="neither an existing directory nor a hub id"):
        resolve_model_dir(str(tmp_path / "nope"))


def _fake_hub_cache(cache: Path, repo: str, source: Path) -> Path:
    """The huggingface_hub cache layout, as a download would leave it."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / ("0" * 40)
    shutil.copytree(source, snapshot)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text("0" * 40)
    return snapshot


def test_hub_id_resolves_from_the_cache_without_network(tmp_path, monkeypatch):
    snapshot = _fake_hub_cache(tmp_path / "hub", "Qwen/Qwen3-TTS-12Hz-1.7B-Base", FIXTURES / "tiny-base")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = resolve_model_dir("Qwen/Qwen3-TTS-12Hz-1.7B-Base", cache_dir=str(tmp_path / "hub"))
    assert resolved == snapshot


def test_hub_id_honours_hf_home(tmp_path):
    """A fresh interpreter, so huggingface_hub reads HF_HOME at import as it does for users."""
    import subprocess
    import sys

    _fake_hub_cache(tmp_path / "home" / "hub", "Qwen/Qwen3-TTS-12Hz-1.7B-Base", FIXTURES / "tiny-base")
    code = ("from wyoming_qwen_tts.engine import QwenTTS; "
            "t = QwenTTS('Qwen/Qwen3-TTS-12Hz-1.7B-Base', device='cpu'); print(t.model_type, t.checkpoint.path)")
    env = {**__import__("os").environ, "HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("base ") and str(tmp_path / "home" / "hub") in out.stdout


def test_uncached_hub_id_offline_gives_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not in the cache"):
        resolve_model_dir("Qwen/Qwen3-TTS-12Hz-0.6B-Base", local_files_only=True, cache_dir=str(tmp_path))


def test_unreachable_hub_says_so_and_where_the_cache_is(tmp_path):
    """No network (a closed port stands for the hub) and an empty cache: the message names the
    unreachable hub, the cache directory and both ways out, not switched-off downloads."""
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = ("from wyoming_qwen_tts.engine.checkpoint import resolve_model_dir\n"
            "resolve_model_dir('Qwen/Qwen3-TTS-12Hz-0.6B-Base')")
    env = {name: value for name, value in __import__("os").environ.items()
           if not name.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(tmp_path / "home"), HF_ENDPOINT=f"http://127.0.0.1:{port}")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    message = out.stderr.strip().splitlines()[-1]
    assert "CheckpointError" in message
    assert f"the hub (http://127.0.0.1:{port}) could not be reached" in message
    assert str(tmp_path / "home" / "hub") in message
    assert "HF_HOME" in message and "--model" in message
    assert "downloads are off" not in message


def test_switched_off_downloads_name_the_switch(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match=r"downloads are off \(--local-files-only\)") as caught:
        resolve_model_dir("Qwen/Qwen3-TTS-12Hz-0.6B-Base", local_files_only=True, cache_dir=str(tmp_path))
    assert str(tmp_path) in str(caught.value)


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads Linux's /proc/self/maps")
def test_loaded_weights_live_in_memory_not_in_the_mapped_file():
    """A model kept in its file's dtype must not run on pages of the mapped safetensors file, which
    the kernel reads lazily and may drop under memory pressure (a stall in mid-request)."""
    from wyoming_qwen_tts.engine.checkpoint import load_safetensors

    weights = FIXTURES / "tiny-base" / "model.safetensors"
    tensors = load_safetensors([weights])

    def mapped_ranges() -> list[tuple[int, int]]:
        ranges = []
        for line in Path("/proc/self/maps").read_text().splitlines():
            if line.endswith(str(weights)):
                start, end = line.split()[0].split("-")
                ranges.append((int(start, 16), int(end, 16)))
        return ranges

    ranges = mapped_ranges()
    inside = [name for name, tensor in tensors.items()
              if any(start <= tensor.data_ptr() < end for start, end in ranges)]
    assert inside == []
