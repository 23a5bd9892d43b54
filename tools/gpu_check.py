"""GPU checks that CI (CPU only) cannot run. One command on a CUDA machine:

    python tools/gpu_check.py [--checkpoint tests/fixtures/tiny-base] [--dtype float32|bfloat16]

TF32 is off, so float32 matrix products are float32.
1. Same rows, same batch: the CUDA-graph runner gives the codes of its own fused step run without
   graphs bit for bit (same shapes, same kernels), greedy and seeded; all graphs are captured when
   the batch is made.
2. Single stream vs batch (greedy; eager, bucketed and graphs): equal codes, or the first difference falls on a near tie of
   the single stream (two best logits closer than the tolerance): batching changes the shapes of
   the matrix products, hence their rounding, and a near tie may then go the other way.
3. The scheduler (CUDA graphs, concurrent threads) likewise, with no request left waiting, its
   audio decoded inline and by its codec thread.
4. torch.cuda.set_sync_debug_mode("error") raises nowhere while prompts are built, nor in
   steady-state steps, nor in the step after a row joined, which copies the new composition's
   sampling parameters in (a step's one read of its codes waits on an event, which is not counted).
5. The streamed audio equals a whole decode of its codes on the GPU (<= 1e-4): a single stream,
   its frames replayed in the kept single-row batch and its chunks in its codec slot's graphs.
Prints the attention kernels a step runs (the SDPA backend) and the GPU memory after the batch is
prepared. Exits non-zero on any failure. --json writes what it found, rewritten as each part ends.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

JOIN_TIMEOUT_S = 120  # a request that takes longer is stuck: report it instead of waiting for ever
TIE_TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2, "float16": 3e-2}  # of max(1, |best logit|)
TEXTS = ["Hello world, this is a test.", "Good morning! The weather today is sunny.",
         "Turn on the kitchen lights, please.", "Your timer is done."]


def gib(value: int) -> str:
    return f"{value / 2**30:.3f} GiB"


def make_check_runner(tts, runner: str, batch, sampling):
    """The engine's runners, plus "fused": the graphs' own (compiled, fused) step at the same padded
    shapes without a graph, which a graph replay must equal bit for bit."""
    from wyoming_qwen_tts.engine.runners import BucketedRunner, FrameStep, make_runner, step_plan_of

    plans = (step_plan_of(tts.model.talker, sampling or tts.default_sampling),)
    if runner == "fused":
        return BucketedRunner(batch, step=FrameStep(compiled=tts.compile_steps, whole=True), warm_plans=plans)
    return make_runner(runner, batch, tts.compile_steps, warm_plans=plans)


def run_batch(tts, runner: str, requests: list[dict], max_len: int = 512):
    """Codes (frames, G) per request, all admitted together into one batch with this runner; the
    batch; the device memory allocated once it was prepared (0 off CUDA)."""
    import torch

    from wyoming_qwen_tts.engine.generate import DecodeBatch

    with torch.inference_mode():
        batch = DecodeBatch(tts.model.talker, len(requests), max_len)
        if runner != "eager":
            batch.runner = make_check_runner(tts, runner, batch, requests[0]["sampling"])
            batch.runner.prepare(batch)
        prepared = 0
        if tts.device.type == "cuda":
            torch.cuda.synchronize()
            prepared = torch.cuda.memory_allocated()
        rows = [tts.prepare(r["text"], r["voice"], sampling=r["sampling"], seed=r["seed"], max_frames=r["max_frames"],
                            min_frames=r["min_frames"]) for r in requests]
        for row in rows:
            batch.admit(row)
        frames: dict[int, list] = {id(row): [] for row in rows}
        while batch.rows:
            produced, _ = batch.step()
            for row, frame in produced:
                frames[id(row)].append(frame.cpu().numpy())
    return [np.stack(frames[id(row)]) for row in rows], batch, prepared


@contextmanager
def recording_margins(margins: list[float], best: list[float]):
    """Every greedy choice's gap between its two best logits, in call order (16 per frame). It
    reads values back to the host: only for eager steps, never inside a graph capture."""
    from wyoming_qwen_tts.engine import generate, predictor

    original = generate.choose_planned

    def choose_planned(logits, rows, keys, plan):
        top = logits.float().topk(2, dim=-1).values[0]
        margins.append(float(top[0] - top[1]))
        best.append(float(top[0].abs()))
        return original(logits, rows, keys, plan)

    generate.choose_planned = predictor.choose_planned = choose_planned
    try:
        yield
    finally:
        generate.choose_planned = predictor.choose_planned = original


def compare_to_single(label: str, single: np.ndarray, got: np.ndarray | None, margins: list[float],
                      best: list[float], tolerance: float) -> bool:
    if got is None:
        print(f"{label}: no result")
        return False
    if np.array_equal(single, got):
        print(f"{label}: equal ({len(single)} frames)")
        return True
    frames = min(len(single), len(got))
    differ = [f for f in range(frames) if not np.array_equal(single[f], got[f])]
    first = differ[0] if differ else frames  # else: same codes, one ran longer (an EOS came on a near tie)
    groups = single.shape[1]
    window = slice(first * groups, (first + 1) * groups)
    gap = min(m / max(1.0, b) for m, b in zip(margins[window], best[window])) if margins[window] else float("inf")
    tie = gap <= tolerance
    print(f"{label}: first difference at frame {first} of {frames}; nearest tie there {gap:.2e} "
          f"({'a near tie: accepted' if tie else 'NOT a near tie'})")
    return tie


def attention_kernels(tts) -> list[str]:
    """Names of the attention kernels one eager batch step launches."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from wyoming_qwen_tts.engine.generate import DecodeBatch, Row

    with torch.inference_mode():
        batch = DecodeBatch(tts.model.talker, 2, 256)
        voice = tts.clone_voice(REPO / "tests" / "fixtures" / "ref_16k_stereo.wav", x_vector_only=True)
        for text in TEXTS[:2]:
            batch.admit(Row(tts.prompts.build(text, voice, "auto", device=tts.device), tts.default_sampling, 1, 4))
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            batch.step()
            torch.cuda.synchronize()
    names = {event.key for event in prof.key_averages()}
    return sorted(n for n in names if any(w in n.lower() for w in ("flash", "fmha", "efficient", "attention", "sdpa",
                                                                   "softmax", "cudnn")))


def check_scheduler(tts, codec: str, requests: list[dict], singles: list, tolerance: float,
                    runner: str = "cuda-graphs") -> int:
    """Failures of the scheduler serving `requests` from concurrent threads, twice (the second
    pass on a batch that already served), against the single streams."""
    from wyoming_qwen_tts.engine.scheduler import BatchScheduler

    failures = 0
    scheduler = BatchScheduler(tts, max_rows=4, max_len=512, runner=runner, codec=codec)
    try:
        for attempt in range(2):
            results: list = [None] * len(requests)

            def run(index: int) -> None:
                results[index] = np.concatenate([c.codes for c in scheduler.stream(**requests[index])])

            threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(requests))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=JOIN_TIMEOUT_S)
            stuck = sum(thread.is_alive() for thread in threads)
            if stuck:
                print(f"scheduler ({codec} codec) pass {attempt}: {stuck} requests did not finish within "
                      f"{JOIN_TIMEOUT_S} s")
            failures += stuck
            for index, ((single, margins, best), got) in enumerate(zip(singles, results)):
                failures += not compare_to_single(f"scheduler ({codec} codec) pass {attempt}, request {index}",
                                                  single, got, margins, best, tolerance)
    finally:
        scheduler.close()
    return failures


STEADY_STEPS = 6  # with the steps around them, fewer than any check request's min_frames: no row ends


def check_no_syncs(tts, requests: list[dict]) -> dict[str, bool]:
    """Whether each part ran without a synchronising call under torch.cuda.set_sync_debug_mode("error"):
    building prompts (pinned copies on the builder's side stream); steady-state steps of a CUDA-graph
    batch of all requests but the last; then the step after the last one joined (a new composition:
    its rows' sampling parameters stacked and copied in, RowParams.stack, pinned) and one more. A
    step's only wait is the event of its frames' pinned read-back, which the debug mode does not count.
    The requests must sample with the model's default sampling: the batch's graphs are captured for
    that step plan at prepare, so no step here captures one (a capture synchronises)."""
    import torch

    found = {}
    with torch.inference_mode():
        batch = tts.new_batch(len(requests), 512, "cuda-graphs")
        torch.cuda.synchronize()
        with sync_debug_mode_error() as failed:
            rows = [_prepare(tts, r) for r in requests]
        found["building prompts"] = report_syncs("building prompts", failed)
        if failed:
            rows = [_prepare(tts, r) for r in requests]
        *first, last = rows
        for row in first:
            batch.admit(row)
        batch.step()  # the composition's first step, outside the check
        torch.cuda.synchronize()
        with sync_debug_mode_error() as failed:
            _steps(batch, STEADY_STEPS)
        label = f"{STEADY_STEPS} steady-state steps of {len(first)} rows"
        found[label] = report_syncs(label, failed)
        batch.admit(last)  # its prefill, outside the check
        torch.cuda.synchronize()
        with sync_debug_mode_error() as failed:
            _steps(batch, 2)
        label = f"the step after a row joined ({len(rows)} rows, new sampling parameters copied in) and one more"
        found[label] = report_syncs(label, failed)
    return found


def _steps(batch, count: int) -> None:
    rows = len(batch.rows)
    for _ in range(count):
        produced, finished = batch.step()
        if len(produced) != rows or finished:
            raise RuntimeError("a row ended during the checked steps: the check is mis-sized")


@contextmanager
def sync_debug_mode_error():
    """Yields a list that holds the error of a synchronising call made inside, if any."""
    import torch

    failed: list[BaseException] = []
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield failed
    except RuntimeError as err:
        failed.append(err)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def report_syncs(label: str, failed: list) -> bool:
    """True when there was no synchronising call."""
    print(f"{label}: " + (f"FAILED, a synchronising call: {failed[0]}" if failed else "no synchronising call"))
    return not failed


def _prepare(tts, request: dict):
    return tts.prepare(request["text"], request["voice"], sampling=request["sampling"], seed=request["seed"],
                       max_frames=request["max_frames"], min_frames=request["min_frames"])


def main() -> int:
    import torch

    from wyoming_qwen_tts.engine import QwenTTS, SamplingConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(REPO / "tests" / "fixtures" / "tiny-base"))
    parser.add_argument("--dtype", default="float32", choices=sorted(TIE_TOLERANCE))
    parser.add_argument("--compile", choices=("auto", "true", "false"), default="auto",
                        help="the fused step through torch.compile (auto: the engine's default, off); false checks the graphs alone")
    parser.add_argument("--json", type=Path, help="what was found, rewritten as each part ends")
    args = parser.parse_args()
    report: dict = {"checkpoint": Path(args.checkpoint).name, "dtype": args.dtype, "compile": args.compile}

    def save() -> None:
        if args.json:
            partial = args.json.with_name(args.json.name + ".partial")
            partial.write_text(json.dumps(report, indent=2))
            partial.replace(args.json)

    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        report["error"] = "no CUDA device"
        save()
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # exact float32: differences then come from shapes alone
    torch.backends.cudnn.allow_tf32 = False
    tolerance = TIE_TOLERANCE[args.dtype]
    print(f"{args.checkpoint} as {args.dtype} on {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    started = time.perf_counter()
    tts = QwenTTS(args.checkpoint, device="cuda", dtype=args.dtype,
                  compile={"true": True, "false": False}.get(args.compile, "auto"))
    print(f"compiled steps: {tts.compile_steps}; loaded in {time.perf_counter() - started:.1f} s")
    print(f"GPU memory after loading: {gib(torch.cuda.memory_allocated())}")
    report.update(device=torch.cuda.get_device_name(0), torch=torch.__version__, compiled=tts.compile_steps,
                  load_s=time.perf_counter() - started)
    ref = REPO / "tests" / "fixtures" / "ref_16k_stereo.wav"
    voices = [tts.clone_voice(ref, "The quick brown fox."), tts.clone_voice(ref, x_vector_only=True)]
    report["attention_kernels"] = attention_kernels(tts)
    print("attention kernels of a step:", ", ".join(report["attention_kernels"]) or "none found")
    save()
    failures = 0

    def requests(sampling, seeded):
        return [dict(text=t, voice=voices[i % 2], sampling=sampling, max_frames=24, min_frames=10,
                     seed=i if seeded else None) for i, t in enumerate(TEXTS)]

    # 1. graphs vs the same fused step without graphs, same rows in the same batch: bit for bit
    for label, sampling, seeded in [("greedy", SamplingConfig.greedy(), False), ("seeded", None, True)]:
        bucketed, _, _ = run_batch(tts, "fused", requests(sampling, seeded))
        before = torch.cuda.memory_allocated()
        graphed, batch, prepared = run_batch(tts, "cuda-graphs", requests(sampling, seeded))
        runner = batch.runner
        wanted = len(runner.row_buckets) * len(runner.len_buckets)
        same = all(np.array_equal(a, b) for a, b in zip(bucketed, graphed))
        print(f"{label}: cuda-graphs equal the ungraphed fused step bit for bit: {same}; graphs captured at prepare: "
              f"{len(runner.graphs)} of {wanted}; memory after prepare {gib(prepared)} "
              f"({gib(prepared - before)} for this batch, its graphs included)")
        failures += (not same) + (len(runner.graphs) != wanted)
        report.setdefault("graphs_equal_fused_step", {})[label] = {
            "bit_equal": same, "captured_at_prepare": len(runner.graphs), "wanted": wanted,
            "memory_after_prepare_gib": prepared / 2**30}
        save()
        del batch, runner

    # 2. single stream vs batch, greedy, tolerant of near ties
    greedy = requests(SamplingConfig.greedy(), False)
    singles = []
    for request in greedy:  # each alone, eagerly: the margins are read on the host after every choice
        margins, best = [], []
        with recording_margins(margins, best):
            single = run_batch(tts, "eager", [request])[0][0]
        singles.append((single, margins, best))
    for runner in ("eager", "bucketed", "cuda-graphs"):
        batched, _, _ = run_batch(tts, runner, greedy)
        agreed = sum(compare_to_single(f"greedy {runner:11s} batch vs single, request {index}", single, got, margins,
                                       best, tolerance)
                     for index, ((single, margins, best), got) in enumerate(zip(singles, batched)))
        failures += len(greedy) - agreed
        report.setdefault("batch_vs_single_failures", {})[runner] = len(greedy) - agreed
        save()

    # 3. the scheduler with CUDA graphs, requests from concurrent threads, audio decoded inline
    #    (the default) and by the codec thread on its own stream
    for codec in ("inline", "thread"):
        failed = check_scheduler(tts, codec, greedy, singles, tolerance)
        failures += failed
        report.setdefault("scheduler_failures", {})[codec] = failed
        save()

    # 4. no synchronising call while prompts are built, in steady-state steps, nor in the step after
    #    a row joined; rows with the default sampling (the plan the graphs were captured for)
    report["no_synchronising_call"] = check_no_syncs(tts, requests(None, True))
    failures += sum(not ok for ok in report["no_synchronising_call"].values())
    save()

    # 5. streamed audio vs a whole decode
    chunks = list(tts.stream(TEXTS[1], voices[0], sampling=SamplingConfig.greedy(), max_frames=30, min_frames=30))
    streamed = np.concatenate([c.samples for c in chunks])
    whole = tts.decode(np.concatenate([c.codes for c in chunks]), prefix=voices[0].ref_codes)
    error = float(np.abs(streamed - whole).max())
    print(f"stream vs whole decode on GPU: max abs diff {error:.2e}")
    failures += error > 1e-4
    print(f"peak GPU memory {gib(torch.cuda.max_memory_allocated())}")
    print("OK" if not failures else f"{failures} FAILED")
    report.update(stream_vs_whole_decode_max_abs=error, peak_gpu_memory_gib=torch.cuda.max_memory_allocated() / 2**30,
                  failures=int(failures), ok=not failures, seconds=time.perf_counter() - started)
    save()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
