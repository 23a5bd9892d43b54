import json
import os
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels' tests (tests/test_kernels.py) run them interpreted on CPU
# tensors. Triton reads the flag as it is imported (by those tests, or by torch.compile's checks),
# so it is set here, before any test runs.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

FIXTURES = Path(__file__).parent / "fixtures"
PARITY = FIXTURES / "parity"


@pytest.fixture(scope="session")
def parity_cases() -> dict:
    return json.loads((PARITY / "manifest.json").read_text())["cases"]


@pytest.fixture(scope="session")
def base_tts():
    from wyoming_qwen_tts.engine import QwenTTS

    return QwenTTS(FIXTURES / "tiny-base", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def design_tts():
    from wyoming_qwen_tts.engine import QwenTTS

    return QwenTTS(FIXTURES / "tiny-design", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def custom_tts():
    from wyoming_qwen_tts.engine import QwenTTS

    return QwenTTS(FIXTURES / "tiny-custom", device="cpu", dtype="float32")


def make_custom_0b6(directory: Path) -> Path:
    """tiny-custom posing as a 0.6B CustomVoice, in directory (made): only config.json's
    tts_model_size differs, as in the copy tools/make_parity_fixtures.py records the official 0.6B
    behaviour with."""
    directory.mkdir(parents=True, exist_ok=True)
    for item in (FIXTURES / "tiny-custom").iterdir():
        if item.name != "config.json":
            (directory / item.name).symlink_to(item)
    config = json.loads((FIXTURES / "tiny-custom" / "config.json").read_text())
    config["tts_model_size"] = "0b6"
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="session")
def custom_0b6_tts(tmp_path_factory):
    """tiny-custom posing as a 0.6B CustomVoice (make_custom_0b6)."""
    from wyoming_qwen_tts.engine import QwenTTS

    return QwenTTS(make_custom_0b6(tmp_path_factory.mktemp("tiny-custom-0b6")), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def ref_wav() -> Path:
    return FIXTURES / "ref_16k_stereo.wav"


@pytest.fixture(scope="session")
def icl_voice(base_tts, ref_wav):
    """The reference fixture cloned with its transcript, once for every module that only speaks with it."""
    return base_tts.clone_voice(ref_wav, "The quick brown fox.")


@pytest.fixture(scope="session")
def xvector_voice(base_tts, ref_wav):
    """The reference fixture cloned from its x-vector only, shared like icl_voice."""
    return base_tts.clone_voice(ref_wav, x_vector_only=True)
