"""GPU checks that CI (CPU only) cannot run. One command on a CUDA machine:

    python tools/gpu_check.py [--checkpoint tests/fixtures/tiny-base]

1. Greedy codes are the same from the single-stream engine, the eager batch scheduler, the
   bucketed scheduler and the CUDA-graph scheduler (float32, so rounding cannot flip an argmax).
2. Seeded sampling gives the same codes with and without CUDA graphs and batching.
   All CUDA graphs are captured when the batch is made (none in the middle of a request).
3. The streamed audio equals a whole decode of its codes on the GPU (<= 1e-4).
Exits non-zero on any mismatch.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

JOIN_TIMEOUT_S = 120  # a request that takes longer is stuck: report it instead of waiting for ever
TEXTS = ["Hello world, this is a test.", "Good morning! The weather today is sunny.",
         "Turn on the kitchen lights, please.", "Your timer is done."]


def main() -> int:
    import torch

    from wyoming_qwen_tts.engine import QwenTTS, SamplingConfig
    from wyoming_qwen_tts.engine.scheduler import BatchScheduler

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(REPO / "tests" / "fixtures" / "tiny-base"))
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    tts = QwenTTS(args.checkpoint, device="cuda", dtype=args.dtype)
    ref = REPO / "tests" / "fixtures" / "ref_16k_stereo.wav"
    voices = [tts.clone_voice(ref, "The quick brown fox."), tts.clone_voice(ref, x_vector_only=True)]
    failures = 0

    def requests(sampling, seeded):
        return [dict(text=t, voice=voices[i % 2], sampling=sampling, max_frames=24, min_frames=10,
                     seed=i if seeded else None) for i, t in enumerate(TEXTS)]

    for label, sampling, seeded in [("greedy", SamplingConfig.greedy(), False), ("seeded", None, True)]:
        expected = [tts.synthesize(**r)[1] for r in requests(sampling, seeded)]
        for runner in ("eager", "bucketed", "cuda-graphs"):
            scheduler = BatchScheduler(tts, max_rows=4, max_len=512, runner=runner)
            def run(index, reqs=requests(sampling, seeded)):
                results[index] = np.concatenate([c.codes for c in scheduler.stream(**reqs[index])])

            for _ in range(2):  # the second pass runs on a batch that already served
                results = [None] * len(TEXTS)  # a request that fails in this pass must not show the last one's codes
                threads = [threading.Thread(target=run, args=(i,)) for i in range(len(TEXTS))]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(timeout=JOIN_TIMEOUT_S)
                stuck = sum(thread.is_alive() for thread in threads)
                if stuck:
                    print(f"{label:7s} {runner:12s} {stuck} requests did not finish within {JOIN_TIMEOUT_S} s")
                same = not stuck and all(r is not None and np.array_equal(r, e) for r, e in zip(results, expected))
                print(f"{label:7s} {runner:12s} codes equal single stream: {same}")
                failures += not same
            if runner == "cuda-graphs":  # every bucket captured when the batch was made, none since
                graph_runner = scheduler._batch.runner
                want = len(graph_runner.row_buckets) * len(graph_runner.len_buckets)
                print(f"{label:7s} graphs captured up front: {len(graph_runner.graphs)} of {want}")
                failures += len(graph_runner.graphs) != want
            scheduler.close()

    chunks = list(tts.stream(TEXTS[1], voices[0], sampling=SamplingConfig.greedy(), max_frames=30, min_frames=30))
    streamed = np.concatenate([c.samples for c in chunks])
    whole = tts.decode(np.concatenate([c.codes for c in chunks]), prefix=voices[0].ref_codes)
    error = float(np.abs(streamed - whole).max())
    print(f"stream vs whole decode on GPU: max abs diff {error:.2e}")
    failures += error > 1e-4
    print("OK" if not failures else f"{failures} FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
