"""How fast this CPU streams weights through a matrix-vector product: the floor of a decode step.

    python benchmarks/gemv_bandwidth.py [--threads 2]

A decode step multiplies one row of activations by every weight of the model once, so its time is
at least the bytes of the weights over this bandwidth. Measured over 25 code-predictor-sized
linears (3072 x 1024), 315 MB in float32: far larger than any CPU cache, as a model is.
"""

import argparse
import time

import torch
import torch.nn.functional as F

SHAPE = (3072, 1024)  # the 0.6B code predictor's MLP projections
COUNT = 25
PASSES = 10


def bandwidth(dtype: torch.dtype) -> tuple[float, float, float]:
    """(GB/s, ms per pass, MB per pass) of F.linear over COUNT weights, one activation row."""
    weights = [torch.randn(SHAPE, dtype=dtype) for _ in range(COUNT)]
    x = torch.randn(1, SHAPE[1], dtype=dtype)
    for _ in range(3):  # warm-up: oneDNN's primitives, page faults
        for w in weights:
            F.linear(x, w)
    started = time.perf_counter()
    for _ in range(PASSES):
        for w in weights:
            F.linear(x, w)
    seconds = (time.perf_counter() - started) / PASSES
    nbytes = sum(w.numel() * w.element_size() for w in weights)
    return nbytes / seconds / 1e9, seconds * 1e3, nbytes / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for dtype in (torch.float32, torch.bfloat16):
        rate, ms, mb = bandwidth(dtype)
        print(f"{str(dtype):15s} {rate:5.1f} GB/s ({ms:.1f} ms for {mb:.0f} MB), {args.threads} threads")


if __name__ == "__main__":
    main()
