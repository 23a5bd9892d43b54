"""The real server whose models take $SLOW_LOAD_SECONDS longer to load, for the tests of what it
answers while loading: each model load sleeps that long first. The server itself gains no hook.
Run as `python -m tests.slow_loading_server SERVER-OPTIONS`."""

import os
import time

from wyoming_qwen_tts import __main__ as server
from wyoming_qwen_tts import synthesis

_load_model = synthesis._load_model


def _slow_load_model(*args, **kwargs):
    time.sleep(float(os.environ.get("SLOW_LOAD_SECONDS", "0")))
    return _load_model(*args, **kwargs)


synthesis._load_model = _slow_load_model

if __name__ == "__main__":
    server.run()
