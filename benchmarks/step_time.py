"""Median time of one eager frame step (talker draw + 15 predictor steps + talker decode) at the
0.6B Base widths, random weights, 1 row, cache 256, on the CPU:

    python benchmarks/step_time.py TREE DTYPE QUANTIZE     # e.g. . bfloat16 int8, or . float32 none

TREE is the source tree timed (put first on sys.path), so that an older commit unpacked elsewhere
(git archive COMMIT | tar -x -C /tmp/base) runs the same script: run both alternately, each in a
fresh process (the tree must have the one frame step: engine/runners.py, from 2026-12-02 on).
Weights are concatenated as the engine loads them; int8 as engine.py quantizes.
"""
import statistics
import sys
import time

tree, dtype_name, quantize = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, tree)
import torch

from benchmarks.kernel_count import scaled_config
from wyoming_qwen_tts.engine.generate import DecodeBatch
from wyoming_qwen_tts.engine.layers import fuse_weights
from wyoming_qwen_tts.engine.quantize import quantize_int8
from wyoming_qwen_tts.engine.runners import BucketedRunner, step_plan_of
from wyoming_qwen_tts.engine.sampling import SamplingConfig, SamplingParams
from wyoming_qwen_tts.engine.talker import Talker

dtype = getattr(torch, dtype_name)
STEPS = 4
torch.manual_seed(0)
cfg = scaled_config("0.6B-Base", 1)
talker = Talker(cfg).eval().requires_grad_(False).to(dtype)
fuse_weights(talker)
if quantize == "int8":
    quantize_int8(talker, dtype)
batch = DecodeBatch(talker, max_rows=1, max_len=256)
runner = BucketedRunner(batch, row_buckets=(1,), len_buckets=(256,))
params = (runner.params[0].rows(1), runner.params[1].rows(1))
batch._plan = step_plan_of(talker, SamplingConfig(talker=SamplingParams(temperature=0.9, top_k=50,
                                                                       repetition_penalty=1.05),
                                                  predictor=SamplingParams(temperature=0.9, top_k=50)))
times = []
with torch.inference_mode():
    for i in range(STEPS + 1):
        start = time.perf_counter()
        batch.eager_step(1, 256, params)
        if i >= 1:
            times.append(time.perf_counter() - start)
with open("/proc/loadavg") as loadavg:
    load = loadavg.read().split()[:3]
print(f"{tree} {dtype_name} {quantize}: median {statistics.median(times)*1000:.0f} ms/step, "
      f"min {min(times)*1000:.0f}, threads {torch.get_num_threads()}, load {' '.join(load)}", flush=True)
