"""The command line every peer runner (official_runner.py, faster_runner.py) takes from
bench_engine.py. Plain argparse: the runners live in other environments than our package."""

from __future__ import annotations

import argparse


def peer_parser(device: str, dtype: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--ref-audio", required=True)
    parser.add_argument("--ref-text", required=True)
    parser.add_argument("--text", required=True)
    parser.add_argument("--frames", type=int, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default=device)
    parser.add_argument("--dtype", default=dtype)
    return parser
