"""Serving speed of our engine: one stream, the per-frame split, and a concurrency sweep.

    python benchmarks/serving_bench.py --checkpoint bench-checkpoints/1.7B-Base --build 1.7B-Base \
        --device cuda --dtype bfloat16 --runner cuda-graphs --sweep 1,4,8,16,32,64 --json out.json

Reports, on one device and one checkpoint:
  - single stream: first audio p50/p95 (request -> first playable sample), x real time;
  - per-frame milliseconds split into talker step, code predictor (15 steps) and codec decode;
  - peak GPU memory, and at the server's defaults (--server-rows rows, 1536 positions, CUDA graphs,
    codec inline) on its own: allocated after the batch's warm-up and the peak while that many
    streams run at once;
  - a concurrency sweep: N streams submitted together to the batch scheduler; first audio p50/p95
    across streams and each stream's speed (audio seconds per wall second, >1 = faster than real time).
Random weights: EOS is held off (min_frames = frames) so every run has the same length.
Runs on CPU too (slowly), which is how the script itself is tested. With --json the report is
rewritten as each part ends, so a run cut short by a time limit keeps the parts it finished.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_engine import REF_TEXT, TEXT, git_commit, write_reference  # noqa: E402
from benchmarks.stats import percentile  # noqa: E402


class Clock:
    """Time of device work: synchronizes the device before reading the time. Only for timing
    stages in isolation (frame_split); a stream's first audio is timed with time.perf_counter()
    alone, from when that stream asks: its chunks reach the host as arrays, so they are done when
    seen, and a device-wide synchronize at its start would wait for other streams' steps."""

    def __init__(self, device) -> None:
        import torch

        self.cuda = device.type == "cuda"
        self.torch = torch

    def now(self) -> float:
        if self.cuda:
            self.torch.cuda.synchronize()
        return time.perf_counter()


def single_stream(tts, voice, frames: int, runs: int) -> dict:
    first, totals = [], []
    for index in range(runs + 1):
        start = time.perf_counter()
        seen_first = None
        for chunk in tts.stream(TEXT, voice, language="English", max_frames=frames, min_frames=frames,
                                first_chunk_frames=1, seed=index):
            if seen_first is None:
                seen_first = time.perf_counter() - start
        total = time.perf_counter() - start
        if index:  # the first run warms up
            first.append(seen_first)
            totals.append(total)
    audio_s = frames * 0.08
    return {"first_audio_ms_p50": 1000 * percentile(first, 50), "first_audio_ms_p95": 1000 * percentile(first, 95),
            "x_realtime": audio_s / statistics.median(totals), "ms_per_frame": 1000 * statistics.median(totals) / frames,
            "runs": runs}


def frame_split(tts, voice, clock: Clock, repeats: int = 20) -> dict:
    """Milliseconds per frame in each stage, one stream, measured stage by stage."""
    import torch

    from wyoming_qwen_tts.engine.generate import DecodeBatch, Row
    from wyoming_qwen_tts.engine.layers import RowPositions
    from wyoming_qwen_tts.engine.runners import step_plan_of
    from wyoming_qwen_tts.engine.sampling import RowParams

    talker = tts.model.talker
    prefill = tts.prompts.build(TEXT, voice, "english")
    positions = prefill.embeds.shape[1] + repeats * 3 + 8
    batch = DecodeBatch(talker, 1, positions, capacity=positions)  # the timed steps write past admission's need
    batch.admit(Row(prefill, tts.default_sampling, 0, repeats * 3 + 4))
    params = RowParams.stack([tts.default_sampling.predictor], talker.code_predictor.cfg.vocab_size, tts.device)
    seeds = torch.zeros(1, dtype=torch.int64, device=tts.device)
    code0 = torch.zeros(1, dtype=torch.int64, device=tts.device)
    frame = torch.zeros(1, talker.cfg.num_code_groups, dtype=torch.int64, device=tts.device)

    def timed(fn) -> float:
        fn()
        start = clock.now()
        for _ in range(repeats):
            fn()
        return 1000 * (clock.now() - start) / repeats

    with torch.inference_mode():
        def talker_step():
            length = batch.cache.lengths[0]
            batch.cache.lengths[0] += 1
            talker.decode(talker.embed_frames(frame)[:, None], batch.cache,
                          RowPositions(torch.tensor([length], device=tts.device), length + 1))

        plan = step_plan_of(talker, tts.default_sampling)[1]

        def predictor_step():
            talker.code_predictor.predict(batch.hidden[:1], talker.embed_codec(code0), batch.predictor_cache, params,
                                          seeds, seeds, plan)

        state = tts.codec.decoder.new_state()
        codes = torch.zeros(1, 1, talker.cfg.num_code_groups, dtype=torch.int64, device=tts.device)
        split = {"talker_ms": timed(talker_step), "predictor_ms": timed(predictor_step),
                 "decode_1_frame_ms": timed(lambda: tts.codec.decoder(codes, state))}
        if tts.compile_steps:
            split["fused_draws_and_predictor_ms"] = timed(lambda: fused_codes_step(tts, batch))
        codes8 = codes.expand(1, 8, -1).contiguous()
        split["decode_per_frame_in_8_frame_chunks_ms"] = timed(lambda: tts.codec.decoder(codes8, state)) / 8
    return split


def fused_codes_step(tts, batch) -> None:
    """The compiled part of a CPU frame step (generate.frame_codes): the talker's draw, the code
    predictor's 15 steps and their draws, for one row with the model's default sampling."""
    from wyoming_qwen_tts.engine.generate import frame_codes
    from wyoming_qwen_tts.engine.runners import compiled, step_plan_of

    compiled(frame_codes)(*batch.step_args(1, batch.row_params()), batch.predictor_cache,
                          step_plan_of(tts.model.talker, tts.default_sampling))


def server_memory(tts, voice, rows: int, frames: int) -> dict:
    """GPU memory of a batch scheduler made as the server makes it (rows, its default 1536 positions,
    the model's runner, codec auto), on top of what the model holds already (weights, its single-stream
    batch): allocated once its warm-up request made the batch (graphs captured) and the codec's slots,
    and the peak while `rows` streams of `frames` frames run at once."""
    import torch

    from wyoming_qwen_tts.engine.scheduler import BatchScheduler

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    gib = 2**30
    report = {"rows": rows, "model_and_single_stream_gib": torch.cuda.memory_allocated() / gib}
    scheduler = BatchScheduler(tts, max_rows=rows)
    try:
        started = time.perf_counter()
        list(scheduler.stream(TEXT, voice, max_frames=4, min_frames=4))  # as the server's warm-up
        report["ready_s"] = time.perf_counter() - started
        report["after_warm_up_gib"] = torch.cuda.memory_allocated() / gib

        def run(index: int) -> None:
            for _ in scheduler.stream(TEXT, voice, language="English", max_frames=frames, min_frames=frames,
                                      seed=index):
                pass

        threads = [threading.Thread(target=run, args=(i,)) for i in range(rows)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        report["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / gib
        report["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / gib
    finally:
        scheduler.close()
    print(f"  server defaults ({rows} rows): {report['after_warm_up_gib']:.2f} GiB after warm-up, peak "
          f"{report['peak_allocated_gib']:.2f} GiB allocated, {report['peak_reserved_gib']:.2f} GiB reserved",
          flush=True)
    return report


def sweep(tts, voice, levels: list[int], frames: int, runner: str, codec: str = "auto",
          ready: dict | None = None) -> Iterator[dict]:
    """Each level's figures as it ends; ready["batch_ready_s"]: how long the batch took to make."""
    from wyoming_qwen_tts.engine.scheduler import BatchScheduler
    from wyoming_qwen_tts.engine.threads import release_thread_team

    results = []
    release_thread_team()  # as the server does once loaded: the batch thread computes from now on
    scheduler = BatchScheduler(tts, max_rows=max(levels), max_len=512 + frames, runner=runner, codec=codec)
    print(f"  batch scheduler: runner {scheduler.runner}, codec {scheduler.codec}", flush=True)
    try:
        started = time.perf_counter()
        list(scheduler.stream(TEXT, voice, max_frames=4, min_frames=4))  # warm-up: caches, every CUDA graph
        warm_up_s = time.perf_counter() - started
        if ready is not None:
            ready["batch_ready_s"] = warm_up_s
        print(f"  batch of {max(levels)} rows ready (caches, graphs) in {warm_up_s:.1f} s", flush=True)
        for level in levels:
            first, speed = [None] * level, [None] * level
            barrier = threading.Barrier(level)

            def run(index: int) -> None:
                barrier.wait()
                start = time.perf_counter()  # this stream's clock: from when it asks
                for chunk in scheduler.stream(TEXT, voice, language="English", max_frames=frames,
                                              min_frames=frames, seed=index):
                    if first[index] is None:
                        first[index] = time.perf_counter() - start
                speed[index] = frames * 0.08 / (time.perf_counter() - start)

            scheduler.codec_lag_s = []
            threads = [threading.Thread(target=run, args=(i,)) for i in range(level)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            results.append({"streams": level, "first_audio_ms_p50": 1000 * percentile(first, 50),
                            "first_audio_ms_p95": 1000 * percentile(first, 95),
                            "x_realtime_min": min(speed), "x_realtime_p50": percentile(speed, 50)})
            lag = list(scheduler.codec_lag_s)  # codes made -> audio decoded, per chunk
            if lag:
                results[-1].update(codec_lag_ms_p50=1000 * percentile(lag, 50), codec_lag_ms_max=1000 * max(lag))
            print(f"  {level:3d} streams: first audio p50 {results[-1]['first_audio_ms_p50']:.0f} ms, "
                  f"p95 {results[-1]['first_audio_ms_p95']:.0f} ms, slowest stream {min(speed):.2f}x real time, "
                  f"codes -> audio p50 {results[-1].get('codec_lag_ms_p50', float('nan')):.0f} ms, "
                  f"max {results[-1].get('codec_lag_ms_max', float('nan')):.0f} ms", flush=True)
            yield results[-1]
    finally:
        scheduler.close()


def main() -> None:
    import torch

    from wyoming_qwen_tts.engine import QwenTTS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--build", help="published config to build the checkpoint from when it is absent")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--sweep", default="1,4,8,16,32,64")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--runner", default="auto", help="eager, bucketed, compiled, cuda-graphs or auto "
                        "(the model's: cuda-graphs on CUDA, compiled on a CPU when --compile says so, else eager)")
    parser.add_argument("--compile", choices=("auto", "true", "false"), default="auto",
                        help="frame steps through torch.compile (eager vs compiled: run once with each)")
    parser.add_argument("--codec", default="auto", choices=("auto", "thread", "inline"),
                        help="where the batch scheduler decodes audio (auto: inline, on the batch thread)")
    parser.add_argument("--quantize", default="none", choices=("none", "int8"), help="the talker's weights")
    parser.add_argument("--server-rows", type=int, default=8,
                        help="on CUDA, the memory of a scheduler of this many rows as the server makes it "
                             "(its default --max-batch: 8); 0 skips it")
    parser.add_argument("--json", type=Path, help="the report, rewritten as each part ends")
    args = parser.parse_args()

    if not args.checkpoint.exists():
        if not args.build:
            raise SystemExit(f"{args.checkpoint} does not exist (give --build CONFIG)")
        from benchmarks.make_checkpoint import build

        build(args.build, args.checkpoint, torch.bfloat16, None, None)
    compile_steps = {"true": True, "false": False}.get(args.compile, "auto")
    started = time.perf_counter()
    tts = QwenTTS(args.checkpoint, device=args.device, dtype=args.dtype, compile=compile_steps,
                  quantize=args.quantize)
    load_s = time.perf_counter() - started
    clock = Clock(tts.device)
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "reference.wav"
        write_reference(ref)
        voice = tts.clone_voice(ref, REF_TEXT)
    if tts.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    report = {"device": torch.cuda.get_device_name() if tts.device.type == "cuda" else "cpu",
              "dtype": str(tts.dtype), "checkpoint": args.checkpoint.name, "frames": args.frames,
              "commit": git_commit(), "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
              "runner": tts.runner, "compiled": tts.compile_steps, "quantize": tts.quantize, "threads": torch.get_num_threads()}
    print(f"{report['device']} {report['dtype']} {report['checkpoint']} commit {report['commit']}, runner "
          f"{tts.runner}, compiled {tts.compile_steps}, {report['threads']} threads", flush=True)
    cuda = tts.device.type == "cuda"
    peak = 0.0

    def save() -> None:  # after each part: a run cut short keeps what it finished
        if cuda:
            report["peak_gpu_memory_gib"] = max(peak, torch.cuda.max_memory_allocated() / 2**30)
        if args.json:
            partial = args.json.with_name(args.json.name + ".partial")
            partial.write_text(json.dumps(report, indent=2))
            partial.replace(args.json)

    started = time.perf_counter()
    list(tts.stream(TEXT, voice, max_frames=2, min_frames=2))  # the single-stream batch: graphs, compiled steps
    report["start_up_s"] = {"load": load_s, "first_stream_ready": time.perf_counter() - started}
    print("start-up (s):", report["start_up_s"], flush=True)
    save()
    report["single_stream"] = single_stream(tts, voice, args.frames, args.runs)
    print("single stream:", report["single_stream"], flush=True)
    save()
    report["frame_split"] = frame_split(tts, voice, clock)
    print("per frame:", report["frame_split"], flush=True)
    save()
    if cuda and args.server_rows:
        peak = torch.cuda.max_memory_allocated() / 2**30  # server_memory resets the peak: keep the run's
        report["server_defaults_memory"] = server_memory(tts, voice, args.server_rows, args.frames)
        gc.collect()  # that scheduler's batch and graphs gone before the sweep makes its own
        torch.cuda.empty_cache()
        save()
    levels = [int(v) for v in args.sweep.split(",") if v]
    report["sweep"] = []
    if levels:
        for result in sweep(tts, voice, levels, args.frames, args.runner, args.codec, report["start_up_s"]):
            report["sweep"].append(result)
            save()
    save()
    if cuda:
        print(f"peak GPU memory {report['peak_gpu_memory_gib']:.2f} GiB")


if __name__ == "__main__":
    main()
