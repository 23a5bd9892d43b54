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
