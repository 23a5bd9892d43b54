"""The real server with a leak injected, for testing the soak itself: every connection keeps 1 KB
for good. Run as `python -m tests.leaky_server SERVER-OPTIONS` (tools/soak.py --server-module).
Built on tests/traced_server.py, so the soak sees its Python heap too."""

import os

from tests.traced_server import server
from wyoming_qwen_tts.handler import TtsEventHandler

LEAK_BYTES = 1024
_kept: list[bytes] = []
_original_init = TtsEventHandler.__init__


def _leaking_init(self, *args, **kwargs) -> None:
    _original_init(self, *args, **kwargs)
    _kept.append(os.urandom(LEAK_BYTES))  # random: every page of it is really touched


TtsEventHandler.__init__ = _leaking_init

if __name__ == "__main__":
    server.run()
