"""What the GPU does per frame step and whether audio decoding overlaps the steps, on the engine's
own runner and scheduler (engine/runners.py, scheduler.py, codec_slots.py); issue 16 item 8.

    python benchmarks/gpu_profile.py --checkpoint /tmp/bench-checkpoints/1.7B-Base --device cuda \
        --dtype bfloat16 --rows 1,32 --json profile.json

1. The step. A batch of max(--rows) rows with the CUDA-graph runner, its graph captured for each of
   --rows rows at one cache length (--kv-len) with the model's default sampling (as a server's
   warm-up captures them). For each row count: the time per replay (CUDA events over --timed
   replays), and torch.profiler over --replays replays: kernels per replay, their GPU time per
   replay (summed, and the span from the first kernel's start to the last one's end), the kernels
   that take the most time; and the same step run without its graph (kernels launched one by one:
   the count a replay should equal, and what the graph saves in time).
2. The scheduler's loop. A BatchScheduler (the server's: CUDA graphs, 1536 positions) serving
   --streams streams of --frames frames at once, under the profiler, for each --codec mode:
   "inline" (the default: audio decoded by the batch thread between steps, on the steps' stream, so
   nothing can overlap) and "thread" (a codec thread on its own stream). Reported: GPU busy time per
   stream, and how much of the codec stream's kernel time overlaps kernels of the steps' stream; on
   the host, the batch thread's time in steps and in decoding, and how much decoding (on the codec
   thread) overlaps a step.
On CPU (how this script is tested, on the tiny checkpoint) the same, reduced: the step runs eagerly
at the same padded shapes and its operators are counted (benchmarks/kernel_count.py's counter: each
one not a view is at least one kernel on a GPU) instead of kernels; the loop's host figures alone.
The JSON report is rewritten as each part ends, so a run cut short keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_engine import REF_TEXT, TEXT, git_commit, write_reference

NOT_KERNELS = ("Memcpy", "Memset", "Stream Sync", "Event Sync", "Context Sync", "Device Sync")


# -- intervals ------------------------------------------------------------------------------------

def merged(intervals) -> list[tuple[int, int]]:
    """The union of (start, end) intervals as sorted disjoint intervals."""
    out: list[list[int]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(start, end) for start, end in out]


def covered(intervals) -> int:
    return sum(end - start for start, end in merged(intervals))


def overlap(a, b) -> int:
    """Length of the intersection of the unions of two sets of intervals."""
    a, b = merged(a), merged(b)
    total = i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        total += max(0, end - start)
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


# -- the profiler's GPU events ----------------------------------------------------------------------

class Kernel:
    __slots__ = ("end", "name", "start", "stream")

    def __init__(self, name: str, start: int, end: int, stream: int) -> None:
        self.name, self.start, self.end, self.stream = name, start, end, stream


def gpu_kernels(prof) -> tuple[list[Kernel], Counter]:
    """The kernels the profiler recorded on the GPU (ns, the profiler's clock; stream ids), and a
    count of the other GPU activities (copies, sets, syncs) by kind. Reads the raw profiler events:
    building torch's FunctionEvents for ~10^5 kernels would take longer than the run."""
    from torch.autograd import DeviceType

    kernels, others = [], Counter()
    for event in prof.profiler.kineto_results.events():
        if event.device_type() != DeviceType.CUDA:
            continue
        if getattr(event, "is_user_annotation", lambda: False)():
            continue
        name = event.name()
        if name.startswith(NOT_KERNELS) or name == "gpu_user_annotation":
            others[name.split(" ")[0]] += 1
            continue
        start = event.start_ns()
        kernels.append(Kernel(name, start, start + event.duration_ns(), event.device_resource_id()))
    return kernels, others


@contextmanager
def gpu_profile(cuda: bool):
    """torch.profiler recording the GPU's activities (CUDA), or nothing off CUDA."""
    if not cuda:
        yield None
        return
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        yield prof


# -- 1. the step ------------------------------------------------------------------------------------

def step_figures(tts, rows_list: list[int], kv_len: int, replays: int, timed: int, results: list, save) -> None:
    """Each row count's figures appended to `results` as they come, save() called after each."""
    import torch

    from benchmarks.kernel_count import OpCounter
    from wyoming_qwen_tts.engine.generate import DecodeBatch
    from wyoming_qwen_tts.engine.runners import BucketedRunner, CudaGraphRunner, FrameStep, step_plan_of

    cuda = tts.device.type == "cuda"
    talker = tts.model.talker
    plan = step_plan_of(talker, tts.default_sampling)
    batch = DecodeBatch(talker, max(rows_list), kv_len, capacity=kv_len)
    runner_class = CudaGraphRunner if cuda else BucketedRunner
    runner = runner_class(batch, row_buckets=tuple(rows_list), len_buckets=(kv_len,),
                          step=FrameStep(compiled=tts.compile_steps, whole=True), warm_plans=(plan,))
    batch.runner = runner
    started = time.perf_counter()
    with torch.inference_mode():
        runner.prepare(batch)  # on CUDA: every (rows, kv_len) graph captured, as at a server's warm-up
    prepared_s = time.perf_counter() - started
    batch._plan = plan  # the step plan of rows that sample as the model's default (what was captured)
    try:
        for rows in rows_list:
            figure = {"rows": rows, "kv_len": kv_len, "prepare_s": prepared_s}  # CUDA: every graph captured
            if cuda:
                figure["graphs_captured"] = len(runner.graphs)
            with torch.inference_mode():
                def graphed(rows=rows):  # a replay (CUDA) or the eager step
                    return runner.execute(batch, rows, kv_len)

                def ungraphed(rows=rows):  # the same step without a graph: its kernels launched one by one
                    return BucketedRunner.execute(runner, batch, rows, kv_len)

                if cuda:
                    figure.update(replay_figures(graphed, ungraphed, replays, timed))
                else:
                    counter = OpCounter()
                    with counter:
                        ungraphed()
                    total = sum(counter.ops.values())
                    figure.update(ops_per_step=total, kernel_ops_per_step=total - counter.views,
                                  top_ops=dict(counter.ops.most_common(8)), step_ms=host_ms(ungraphed, timed))
            results.append(figure)
            print(f"  step, {rows} rows: {summary(figure)}", flush=True)
            save()
    finally:
        batch._plan = None


def host_ms(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - start) / repeats


def device_ms(fn, repeats: int) -> float:
    import torch

    fn()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    begin.record()
    for _ in range(repeats):
        fn()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / repeats


def replay_figures(graphed, ungraphed, replays: int, timed: int) -> dict:
    import torch

    figure = {"replay_ms": device_ms(graphed, timed), "ungraphed_step_ms": device_ms(ungraphed, max(1, timed // 10))}
    torch.cuda.synchronize()
    with gpu_profile(True) as prof:
        for _ in range(replays):
            graphed()
        torch.cuda.synchronize()
    kernels, others = gpu_kernels(prof)
    by_name: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for kernel in kernels:
        by_name[kernel.name][0] += 1
        by_name[kernel.name][1] += kernel.end - kernel.start
    top = sorted(by_name.items(), key=lambda item: -item[1][1])[:10]
    figure.update(
        profiled_replays=replays, kernels_per_replay=len(kernels) / replays,
        other_gpu_activities_per_replay={kind: count / replays for kind, count in others.items()},
        kernel_time_ms_per_replay=sum(k.end - k.start for k in kernels) / replays / 1e6,
        kernel_busy_ms_per_replay=covered((k.start, k.end) for k in kernels) / replays / 1e6,
        span_ms_per_replay=(max(k.end for k in kernels) - min(k.start for k in kernels)) / replays / 1e6
        if kernels else None,
        streams=sorted({k.stream for k in kernels}),
        top_kernels=[{"name": name[:120], "per_replay": count / replays, "ms_per_replay": ns / replays / 1e6}
                     for name, (count, ns) in top])
    with gpu_profile(True) as prof:
        ungraphed()
        torch.cuda.synchronize()
    eager, _ = gpu_kernels(prof)
    figure["ungraphed_kernels_per_step"] = len(eager)
    figure["ungraphed_kernel_time_ms"] = sum(k.end - k.start for k in eager) / 1e6
    return figure


def summary(figure: dict) -> str:
    keys = ("replay_ms", "kernels_per_replay", "kernel_busy_ms_per_replay", "ungraphed_kernels_per_step",
            "ungraphed_step_ms", "kernel_ops_per_step", "step_ms", "gpu_busy_ms", "gpu_span_ms",
            "codec_overlap_fraction",
            "decode_share_of_batch_thread", "decode_overlapping_steps_s")
    return ", ".join(f"{key} {figure[key]:.3g}" if isinstance(figure[key], float) else f"{key} {figure[key]}"
                     for key in keys if figure.get(key) is not None)


# -- 2. the scheduler's loop ------------------------------------------------------------------------

def timed_scheduler_class():
    from wyoming_qwen_tts.engine.scheduler import BatchScheduler

    class TimedScheduler(BatchScheduler):
        """The scheduler, recording on the host when each step and each group decode ran (on which thread)."""

        def __init__(self, *args, **kwargs) -> None:
            self.spans: dict[str, list[tuple[float, float]]] = {"step": [], "decode": []}
            self.decode_threads: set[str] = set()
            super().__init__(*args, **kwargs)

        @contextmanager
        def _timed(self, kind: str):
            start = time.perf_counter()
            try:
                yield
            finally:
                self.spans[kind].append((start, time.perf_counter()))

        def _step(self, batch) -> None:
            with self._timed("step"):
                super()._step(batch)

        def _decode_group(self, group) -> None:
            with self._timed("decode"):
                super()._decode_group(group)
            self.decode_threads.add(threading.current_thread().name)

    return TimedScheduler


def loop_figures(tts, voice, codec: str, streams: int, frames: int) -> dict:
    cuda = tts.device.type == "cuda"
    scheduler = timed_scheduler_class()(tts, max_rows=streams, codec=codec)
    try:
        started = time.perf_counter()
        list(scheduler.stream(TEXT, voice, max_frames=4, min_frames=4))  # warm-up: the batch, its graphs, the codec's
        ready_s = time.perf_counter() - started
        for spans in scheduler.spans.values():
            spans.clear()
        barrier = threading.Barrier(streams)
        errors: list[Exception] = []

        def run(index: int) -> None:
            try:
                barrier.wait()
                for _ in scheduler.stream(TEXT, voice, language="English", max_frames=frames, min_frames=frames,
                                          seed=index):
                    pass
            except Exception as err:  # noqa: BLE001 - raised after the join, never hanging it
                errors.append(err)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(streams)]
        with gpu_profile(cuda) as prof:
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall_s = time.perf_counter() - started
            if cuda:
                import torch

                torch.cuda.synchronize()
        if errors:
            raise errors[0]
        steps, decodes = scheduler.spans["step"], scheduler.spans["decode"]
        step_s = sum(end - start for start, end in steps)
        decode_s = sum(end - start for start, end in decodes)
        figure = {"codec": scheduler.codec, "streams": streams, "frames": frames, "ready_s": ready_s,
                  "wall_s": wall_s, "steps": len(steps), "decode_groups": len(decodes),
                  "decode_threads": sorted(scheduler.decode_threads), "step_s": step_s, "decode_s": decode_s,
                  # inline: the batch thread decodes between steps; its time is the loop's
                  "decode_share_of_batch_thread": decode_s / (step_s + decode_s) if scheduler.codec == "inline"
                  and step_s + decode_s else None,
                  "decode_overlapping_steps_s": overlap(steps, decodes)}
        if prof is not None:
            figure.update(stream_figures(prof, scheduler.codec))
    finally:
        scheduler.close()
    return figure


def stream_figures(prof, codec: str) -> dict:
    """Kernels by CUDA stream. The stream with the most kernel time is the steps' (a step is thousands
    of kernels); with the codec on its thread, the codec's is the busiest other one (the request
    threads may launch a few kernels on other streams while building prompts). How much of each
    stream's kernel time overlaps a kernel of the steps' stream. With the codec inline it decodes on
    the steps' stream: nothing of it can overlap a step."""
    kernels, others = gpu_kernels(prof)
    if not kernels:
        return {"gpu_kernels": 0}
    by_stream: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for kernel in kernels:
        by_stream[kernel.stream].append((kernel.start, kernel.end))
    busy = {stream: covered(spans) for stream, spans in by_stream.items()}
    steps_stream = max(busy, key=busy.get)
    figure = {
        "gpu_kernels": len(kernels), "gpu_other_activities": dict(others),
        "gpu_span_ms": (max(k.end for k in kernels) - min(k.start for k in kernels)) / 1e6,
        "gpu_busy_ms": covered((k.start, k.end) for k in kernels) / 1e6, "steps_stream": steps_stream,
        "by_stream": {str(stream): {"kernels": len(spans), "busy_ms": busy[stream] / 1e6,
                                    "overlapping_steps_ms": overlap(spans, by_stream[steps_stream]) / 1e6
                                    if stream != steps_stream else None}
                      for stream, spans in sorted(by_stream.items())}}
    others_busy = {stream: time for stream, time in busy.items() if stream != steps_stream}
    if codec == "thread" and others_busy:
        codec_stream = max(others_busy, key=others_busy.get)
        overlapping = overlap(by_stream[codec_stream], by_stream[steps_stream])
        figure.update(codec_stream=codec_stream, codec_busy_ms=busy[codec_stream] / 1e6,
                      codec_overlapping_steps_ms=overlapping / 1e6,
                      codec_overlap_fraction=overlapping / busy[codec_stream] if busy[codec_stream] else None)
    return figure


# -- the run ----------------------------------------------------------------------------------------

def main() -> int:
    import torch

    from wyoming_qwen_tts.engine import QwenTTS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    parser.add_argument("--rows", default="1,32", help="row counts of the step's graphs (comma-separated)")
    parser.add_argument("--kv-len", type=int, default=256, help="the cache length the step runs at")
    parser.add_argument("--replays", type=int, default=3, help="replays under the profiler, per row count")
    parser.add_argument("--timed", type=int, default=20, help="replays timed with CUDA events (steps on CPU)")
    parser.add_argument("--streams", type=int, default=8, help="streams served at once in the loop's part")
    parser.add_argument("--frames", type=int, default=12, help="frames per stream in the loop's part")
    parser.add_argument("--codec", default="inline,thread", help="the scheduler's codec modes to profile")
    parser.add_argument("--json", type=Path, help="the report, rewritten as each part ends")
    args = parser.parse_args()
    rows_list = sorted({int(v) for v in args.rows.split(",") if v})
    codecs = [v for v in args.codec.split(",") if v]

    started = time.perf_counter()
    tts = QwenTTS(args.checkpoint, device=args.device, dtype=args.dtype)
    cuda = tts.device.type == "cuda"
    report: dict = {"device": torch.cuda.get_device_name() if cuda else "cpu", "dtype": str(tts.dtype),
                    "checkpoint": args.checkpoint.name, "runner": tts.runner, "compiled": tts.compile_steps,
                    "torch": torch.__version__, "commit": git_commit(), "date": time.strftime("%Y-%m-%d"),
                    "command": " ".join(sys.argv), "load_s": time.perf_counter() - started,
                    "counts": "kernels (torch.profiler)" if cuda else "operators (eager, CPU)"}

    def save() -> None:
        if args.json:
            partial = args.json.with_name(args.json.name + ".partial")
            partial.write_text(json.dumps(report, indent=2))
            partial.replace(args.json)

    print(f"{report['device']} {report['dtype']} {report['checkpoint']}, runner {tts.runner}, loaded in "
          f"{report['load_s']:.1f} s", flush=True)
    save()
    report["step"] = []
    step_figures(tts, rows_list, args.kv_len, args.replays, args.timed, report["step"], save)
    save()
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "reference.wav"
        write_reference(ref)
        voice = tts.clone_voice(ref, REF_TEXT)
    report["loop"] = []
    failed = 0
    for codec in codecs:
        try:
            report["loop"].append(loop_figures(tts, voice, codec, args.streams, args.frames))
        except Exception as err:  # noqa: BLE001 - recorded; the other mode still runs
            failed += 1
            report["loop"].append({"codec": codec, "error": repr(err)})
        print(f"  loop, codec {codec}: {summary(report['loop'][-1]) or report['loop'][-1]}", flush=True)
        save()
    report["seconds"] = time.perf_counter() - started
    save()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
