"""Time the official qwen-tts 0.1.1 code on a checkpoint. Runs ONLY in the oracle venv
(tools/oracle_venv.sh); benchmarks/bench_engine.py starts it and reads its JSON from stdout.

The official code cannot stream: its first audio is its whole utterance. To run a fixed number
of frames, EOS is swapped for an id the sampler never emits (codec_pad: it sits in the range
suppressed when sampling), so max_new_tokens = frames + 1 gives exactly `frames` frames.
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import time
import types

import numpy as np
import torch
import transformers  # noqa: F401  (before the stubs: see tools/make_parity_fixtures.py)

for _name in ("sox", "onnxruntime", "torchaudio", "torchaudio.compliance", "torchaudio.compliance.kaldi"):
    _stub = types.ModuleType(_name)
    _stub.__spec__ = importlib.machinery.ModuleSpec(_name, None)
    sys.modules.setdefault(_name, _stub)

from peer_args import peer_parser  # noqa: E402  (beside this script)
from qwen_tts import Qwen3TTSModel  # noqa: E402


def main() -> None:
    parser = peer_parser(device="cpu", dtype="float32")
    args = parser.parse_args()

    dtype = getattr(torch, args.dtype)
    started = time.perf_counter()
    model = Qwen3TTSModel.from_pretrained(args.checkpoint, dtype=dtype, device_map=args.device)
    load_s = time.perf_counter() - started
    prompt = model.create_voice_clone_prompt(ref_audio=args.ref_audio, ref_text=args.ref_text)
    never = model.model.config.talker_config.codec_pad_id

    def run() -> tuple[float, int]:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        wavs, rate = model.generate_voice_clone(text=args.text, language="English", voice_clone_prompt=prompt,
                                                max_new_tokens=args.frames + 1, eos_token_id=never)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0, int(np.asarray(wavs[0]).shape[0])

    run()  # warm-up
    results = [run() for _ in range(args.runs)]
    print(json.dumps({"load_s": load_s, "runs": [{"total_s": t, "samples": n} for t, n in results]}))


if __name__ == "__main__":
    main()
