"""Frames per second, time to first audio and real-time factor: our engine and the official code,
same random-weight checkpoint, same ICL voice, same text, same number of frames.

    python benchmarks/bench_engine.py --checkpoint bench-checkpoints/0.6B-Base \
        [--build 0.6B-Base] [--frames 40] [--runs 3] [--device cpu] [--dtype float32] \
        [--oracle-python .oracle-venv/bin/python] [--json results.json]

--build writes the checkpoint first (benchmarks/make_checkpoint.py) when the directory is absent.
Without --oracle-python only our engine is measured. Prints a Markdown table for BENCHMARKS.md.

The CPU table of BENCHMARKS.md in one command: the official code in float32 and ours in float32,
bfloat16 and int8 weights (bfloat16 activations), each at 1 and 2 threads, each in a fresh process:

    python benchmarks/bench_engine.py --checkpoint bench-checkpoints/0.6B-Base --build 0.6B-Base \
        --cpu-table --threads 1,2 --frames 30 --runs 3 --oracle-python /work/oracle-venv/bin/python \
        [--emulate-avx2] [--emulate-avx2-vnni] [--ggml-peer /tmp/ggml-peer] [--ggml-peer-avx2 /tmp/ggml-peer-avx2]

--emulate-avx2 adds, on an AVX-512 machine, the rows of a CPU with AVX2 only (most home servers):
every library capped at AVX2 by its own variable (AVX2_CAPS), the official code and ours in float32
and in what `--quantize auto` picks on such a CPU (int8 weights, bf16 kernel inputs). On a CPU that
has only AVX2 the plain rows are those rows. --ggml-peer times qwen3-tts.cpp (GGML), built by
benchmarks/ggml_peer/build.sh on the same checkpoint, whole and streamed, Q8_0 and F16; with
--emulate-avx2, --ggml-peer-avx2 names its AVX2-only build (GGML reads no cap variable).
--emulate-avx2-vnni adds the rows of an AVX2 CPU with AVX-VNNI (Intel N100/N305, consumer Intel since
Alder Lake): the same caps, oneDNN's at AVX2_VNNI (needs a CPU with avx_vnni); ours only.
Our int8 rows come with prompts through the CPU's integer matmul (--int8-prompts auto, now) and
without (off, before).

Definitions: first audio = from the request to the first audio sample the caller can play;
frames/s = generated frames / total time; speed = seconds of audio per second of wall time
(x real time, >1 is faster than real time); RTF = wall time / audio time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SAMPLE_RATE = 24000
SAMPLES_PER_FRAME = 1920  # 12.5 frames a second
REF_TEXT = "This is the reference recording of my voice, read slowly and clearly."
TEXT = "The front door has been open for ten minutes. Should I close the garage as well?"


def write_reference(path: Path, seconds: float = 4.0, rate: int = 24000) -> None:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    f0 = 130 + 25 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wav = sum(np.sin(k * phase) / k for k in range(1, 10)) * (0.6 + 0.4 * np.sin(2 * np.pi * 2.5 * t) ** 2)
    sf.write(path, (0.25 * wav).astype(np.float32), rate)


def bench_ours(args: argparse.Namespace, ref: Path) -> dict:
    import torch

    from wyoming_qwen_tts.engine import QwenTTS

    started = time.perf_counter()
    tts = QwenTTS(args.checkpoint, device=args.device, dtype=args.dtype, quantize=args.quantize,
                  int8_prompts=getattr(args, "int8_prompts", "auto"))
    load_s = time.perf_counter() - started
    voice = tts.clone_voice(ref, REF_TEXT)

    def sync() -> None:
        if tts.device.type == "cuda":
            torch.cuda.synchronize()

    def run() -> dict:
        sync()
        t0 = time.perf_counter()
        first = None
        samples = 0
        for chunk in tts.stream(TEXT, voice, language="English", max_frames=args.frames, min_frames=args.frames,
                                first_chunk_frames=1, max_chunk_frames=args.max_chunk_frames):
            if first is None:
                first = time.perf_counter() - t0
            samples += chunk.samples.size
        sync()
        return {"first_audio_s": first, "total_s": time.perf_counter() - t0, "samples": samples}

    run()  # warm-up
    return {"load_s": load_s, "runs": [run() for _ in range(args.runs)]}


def run_peer(runner: str, python: str, site: str | None, args: argparse.Namespace, ref: Path,
             extra: list[str] = (), threads: int | None = None, caps: dict[str, str] | None = None) -> dict:
    """Time another engine in its own interpreter (its dependencies clash with ours)."""
    command = [python, str(REPO / "benchmarks" / runner), "--checkpoint", str(args.checkpoint),
               "--ref-audio", str(ref), "--ref-text", REF_TEXT, "--text", TEXT, "--frames", str(args.frames),
               "--runs", str(args.runs), "--device", args.device, "--dtype", args.dtype, *extra]
    env = thread_env(threads, caps)
    if site:
        env["PYTHONPATH"] = site + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{runner} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_official(args: argparse.Namespace, ref: Path) -> dict:
    result = run_peer("official_runner.py", args.oracle_python, args.oracle_site, args, ref)
    for run in result["runs"]:
        run["first_audio_s"] = run["total_s"]  # no streaming: the first audio is the whole utterance
    return result


def summarize(name: str, result: dict) -> dict:
    """Medians over the runs. Rates are taken per run, then their median: each run's frames over its
    own time (a peer that ends at EOS may make a different length each run)."""
    runs = result["runs"]
    frames = [r["samples"] / SAMPLES_PER_FRAME for r in runs]
    audio_s = [r["samples"] / SAMPLE_RATE for r in runs]
    return {"engine": name, "first_audio_ms": 1000 * statistics.median(r["first_audio_s"] for r in runs),
            "total_s": statistics.median(r["total_s"] for r in runs), "frames": statistics.median(frames),
            "frames_per_s": statistics.median(n / r["total_s"] for n, r in zip(frames, runs)),
            "speed_x_realtime": statistics.median(a / r["total_s"] for a, r in zip(audio_s, runs)),
            "rtf": statistics.median(r["total_s"] / a for a, r in zip(audio_s, runs)),
            "load_s": result["load_s"]}


# Each library's own cap at AVX2 (BENCHMARKS.md, "CPU: AVX2-only (emulated)"): ATen and oneDNN read
# theirs, MKL and fbgemm read CPUID unless told.
AVX2_CAPS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
             "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}


# ... and an AVX2 CPU with AVX-VNNI: oneDNN's integer matmul then adds int8 products in int32.
AVX2_VNNI_CAPS = {**AVX2_CAPS, "ONEDNN_MAX_CPU_ISA": "AVX2_VNNI"}


def thread_env(threads: int | None, caps: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process limited to `threads` compute threads (torch reads
    OMP_NUM_THREADS at start-up), capped at AVX2 if asked."""
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if caps:
        env.update(caps)
    return env


# (label, dtype, quantize, int8 prompts) of our engine in the CPU table.
CPU_VARIANTS = (("float32", "float32", "none", "off"), ("bfloat16", "bfloat16", "none", "off"),
                ("int8 weights, bfloat16 activations, dense prompts (before)", "bfloat16", "int8", "off"),
                ("int8 weights, bfloat16 activations, int8 prompts (auto)", "bfloat16", "int8", "auto"))
# ... and on a CPU with AVX2 only, where bf16 is emulated: float32, and what `--quantize auto` picks there.
AVX2_VARIANTS = (("float32", "float32", "none", "off"),
                 ("int8 weights, bf16 kernel inputs, dense prompts (before)", "float32", "int8", "off"),
                 ("int8 weights, bf16 kernel inputs, int8 prompts (auto)", "float32", "int8", "auto"))


def bench_ours_in_child(args: argparse.Namespace, dtype: str, quantize: str, threads: int,
                        caps: dict[str, str] | None = None, int8_prompts: str = "auto") -> dict:
    """One configuration of ours in a fresh interpreter: its own thread count and memory."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--checkpoint", str(args.checkpoint),
                   "--frames", str(args.frames), "--runs", str(args.runs), "--max-chunk-frames",
                   str(args.max_chunk_frames), "--device", "cpu", "--dtype", dtype, "--quantize", quantize,
                   "--json", str(out)]
        command += ["--int8-prompts", int8_prompts]
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=thread_env(threads, caps))
        if done.returncode != 0:
            raise SystemExit(f"ours ({dtype}, {quantize}) failed:\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())["raw"]["ours"]


def cpu_table(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Rows of the CPU table: for each thread count, the official code (float32), our variants and
    the GGML peer; then the same on an emulated AVX2-only CPU if asked."""
    rows, raw = [], {}
    kinds = [("", False, CPU_VARIANTS, args.ggml_peer)]
    if args.emulate_avx2:
        kinds.append((" (AVX2 emulated)", AVX2_CAPS, AVX2_VARIANTS, args.ggml_peer_avx2))
    if args.emulate_avx2_vnni:
        kinds.append((" (AVX2 + VNNI emulated)", AVX2_VNNI_CAPS, AVX2_VARIANTS, None))
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "reference.wav"
        write_reference(ref)
        for suffix, caps, variants, ggml_dir in kinds:
            for threads in args.threads:
                for key, row in cpu_rows(args, ref, threads, caps, variants, ggml_dir):
                    raw[f"{key} {threads}t{suffix}"] = row.pop("raw")
                    rows.append({**row, "engine": row["engine"] + suffix, "threads": threads})
                    print(markdown(rows[-1:], threads=True), file=sys.stderr, flush=True)
    return rows, raw


def cpu_rows(args: argparse.Namespace, ref: Path, threads: int, caps: dict[str, str] | None, variants,
             ggml_dir: Path | None):
    """(key, row with its raw result) for one thread count on one kind of CPU, each timed as it comes."""
    if args.oracle_python:
        args.dtype = "float32"
        result = run_peer("official_runner.py", args.oracle_python, args.oracle_site, args, ref,
                          threads=threads, caps=caps)
        for run in result["runs"]:
            run["first_audio_s"] = run["total_s"]  # no streaming: the first audio is the whole utterance
        yield "official float32", {**summarize("official qwen-tts 0.1.1, float32", result), "raw": result}
    for label, dtype, quantize, int8_prompts in variants:
        result = bench_ours_in_child(args, dtype, quantize, threads, caps, int8_prompts)
        yield f"ours {label}", {**summarize(f"wyoming-qwen-tts, {label}", result), "raw": result}
    if ggml_dir:
        for quant in ("q8_0", "f16"):
            for stream in (False, True):
                result = run_ggml_peer(ggml_dir, quant, stream, threads, args)
                how = "streamed" if stream else "whole clip"
                yield f"ggml {quant} {how}", {**ggml_row(result, how), "raw": result}


def run_ggml_peer(work: Path, quant: str, stream: bool, threads: int, args: argparse.Namespace) -> dict:
    """The GGML peer through benchmarks/ggml_peer/run.sh (same text, voice, frames and threads)."""
    env = {**thread_env(threads), "THREADS": str(threads), "FRAMES": str(args.frames), "PYTHON": sys.executable}
    command = ["bash", str(REPO / "benchmarks" / "ggml_peer" / "run.sh"), quant, str(int(stream)), str(args.runs),
               str(work)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"the GGML peer ({quant}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ggml_row(result: dict, how: str) -> dict:
    """run.sh's medians as a table row; a whole clip's first audio is its total time."""
    first_ms = result["first_audio_ms"] if result["first_audio_ms"] is not None else 1000 * result["total_s"]
    return {"engine": f"{result['engine']}, {how}", "first_audio_ms": first_ms, "total_s": result["total_s"],
            "frames": result["frames"], "frames_per_s": result["frames"] / result["total_s"],
            "speed_x_realtime": result["x_realtime"], "rtf": 1 / result["x_realtime"], "load_s": None}


def markdown(rows: list[dict], threads: bool = False) -> str:
    """The rows as a markdown table; threads: with a threads column (the CPU table)."""
    head = "| engine | " + ("threads | " if threads else "")
    lines = [head + "first audio (ms, p50) | total (s) | frames | frames/s | speed (x real time) | RTF |",
             "|---|" + ("---:|" if threads else "") + "---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['engine']} | " + (f"{r['threads']} | " if threads else "")
                     + f"{r['first_audio_ms']:.0f} | {r['total_s']:.2f} | {r['frames']:.0f} | "
                     f"{r['frames_per_s']:.2f} | {r['speed_x_realtime']:.3f} | {r['rtf']:.2f} |")
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--build", help="published config to build the checkpoint from when it is absent")
    parser.add_argument("--talker-layers", type=int)
    parser.add_argument("--predictor-layers", type=int)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-chunk-frames", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--quantize", default="none", choices=["none", "int8"], help="our engine's weights")
    parser.add_argument("--int8-prompts", default="auto", choices=["auto", "off"],
                        help="our engine's prompts with int8 weights on a CPU: its integer matmul (auto) or not")
    parser.add_argument("--cpu-table", action="store_true",
                        help="the CPU table: official float32 (with --oracle-python) and ours in float32, "
                             "bfloat16 and int8, at each of --threads, each in a fresh process")
    parser.add_argument("--threads", default="1,2", type=lambda text: [int(t) for t in text.split(",")],
                        help="thread counts for --cpu-table (default 1,2)")
    parser.add_argument("--emulate-avx2", action="store_true",
                        help="--cpu-table: also the rows of an AVX2-only CPU, every library capped at AVX2")
    parser.add_argument("--emulate-avx2-vnni", action="store_true",
                        help="--cpu-table: also the rows of an AVX2 CPU with AVX-VNNI (oneDNN capped at AVX2_VNNI)")
    parser.add_argument("--ggml-peer", type=Path, help="--cpu-table: the GGML peer's build (ggml_peer/build.sh)")
    parser.add_argument("--ggml-peer-avx2", type=Path, help="--cpu-table --emulate-avx2: its AVX2-only build")
    parser.add_argument("--oracle-python", help="python of the oracle venv, to also time the official code")
    parser.add_argument("--oracle-site", help="prepended to PYTHONPATH for --oracle-python (wheels unpacked there)")
    parser.add_argument("--faster-python", help="a python that imports faster_qwen3_tts, to time it too")
    parser.add_argument("--faster-site", help="prepended to PYTHONPATH for --faster-python")
    parser.add_argument("--faster-chunk", type=int, default=1, help="faster-qwen3-tts streaming chunk (frames)")
    parser.add_argument("--json", type=Path, help="write the raw and summarized results here")
    args = parser.parse_args()

    if not args.checkpoint.exists():
        if not args.build:
            raise SystemExit(f"{args.checkpoint} does not exist (give --build CONFIG to make it)")
        from benchmarks.make_checkpoint import build
        import torch

        build(args.build, args.checkpoint, torch.bfloat16, args.talker_layers, args.predictor_layers)

    if args.cpu_table:
        args.device = "cpu"
        rows, raw = cpu_table(args)
        header = (f"checkpoint {args.checkpoint.name}, cpu, {args.frames} frames, median of {args.runs} runs after a "
                  f"warm-up, each configuration in a fresh process; {cpu_name()}, {os.cpu_count()} cores, "
                  f"{date.today()}, commit {git_commit()}, load average {os.getloadavg()[0]:.1f} at the start"
                  + (f"; AVX2 emulated: {' '.join(f'{k}={v}' for k, v in AVX2_CAPS.items())}" if args.emulate_avx2 else "")
                  + ("; AVX2 + VNNI emulated: ONEDNN_MAX_CPU_ISA=AVX2_VNNI" if args.emulate_avx2_vnni else ""))
        print(header)
        print(markdown(rows, threads=True))
        if args.json:
            args.json.write_text(json.dumps({"header": header, "rows": rows, "raw": raw}, indent=2))
        return

    config = json.loads((args.checkpoint / "config.json").read_text())
    header = (f"checkpoint {args.checkpoint.name} (talker {config['talker_config']['num_hidden_layers']} layers, "
              f"hidden {config['talker_config']['hidden_size']}), {args.device} {args.dtype}, {args.frames} frames, "
              f"median of {args.runs} runs after a warm-up; {platform.processor() or platform.machine()}, "
              f"{date.today()}, commit {git_commit()}")
    raw: dict = {}

    def rows() -> list[dict]:
        names = {"ours": "wyoming-qwen-tts (streaming)", "official": "official qwen-tts 0.1.1",
                 "faster": f"faster-qwen3-tts (chunk {args.faster_chunk})"}
        return [summarize(names[key], result) for key, result in raw.items()]

    def save() -> None:  # after each engine: a run cut short (the GPU run's deadline) keeps what finished
        if args.json:
            args.json.write_text(json.dumps({"header": header, "rows": rows(), "raw": raw}, indent=2))

    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "reference.wav"
        write_reference(ref)
        raw["ours"] = bench_ours(args, ref)
        save()
        if args.oracle_python:
            raw["official"] = bench_official(args, ref)
            save()
        if args.faster_python:
            raw["faster"] = run_peer("faster_runner.py", args.faster_python, args.faster_site, args, ref,
                                     ["--chunk-size", str(args.faster_chunk)])
            save()
    print(header)
    print(markdown(rows()))


if __name__ == "__main__":
    main()
