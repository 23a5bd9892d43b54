import json
from pathlib import Path

import pytest

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
