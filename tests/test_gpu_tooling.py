"""The GPU run's tooling, checked here: the scripts parse, the run's steps, order and limits fit its
one device call, every command it runs parses its arguments, the GPU machine's package list reads,
the wheel requirement checker catches a missing requirement (soundfile's cffi was the first), and
gpu_check's comparisons behave on CPU with the real engine."""

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks.wheel_requirements import (NOT_IMPORTED, check_groups, read_machine_packages, unmet, wheel_groups)
from wyoming_qwen_tts.engine import SamplingConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["gpu_run.sh", "gpu_wheels.sh"])
def test_the_gpu_scripts_parse(script):
    subprocess.run(["bash", "-n", str(REPO / "benchmarks" / script)], check=True)


GPU_RUN = REPO / "benchmarks" / "gpu_run.sh"
DEADLINE_S = 540  # GPU_RUN_SECONDS' default: a 600 s device command with room to copy the results back
LOGS = {"preflight.log", "kernels.log", "check.log", "bench.log", "server.log"}


def gpu_run_plan() -> tuple[dict[str, int], list[str], str]:
    """gpu_run.sh's step limits (LIMIT), `all`'s steps in order (ALL) and the script's text."""
    script = GPU_RUN.read_text()
    table = re.search(r"declare -A LIMIT=\((.*?)\n\)", script, re.DOTALL).group(1)
    limits = {name: int(value) for name, value in re.findall(r"\[([\w-]+)\]=(\d+)", table)}
    order = re.search(r"^ALL=\(([^)]*)\)", script, re.MULTILINE).group(1).split()
    return limits, order, script


def function_body(script: str, name: str) -> str:
    return re.search(rf"^{name}\(\) \{{(.*?)^\}}", script, re.MULTILINE | re.DOTALL).group(1)


def test_gpu_run_puts_every_step_under_a_timeout_and_writes_at_most_8_result_files():
    limits, _, script = gpu_run_plan()
    steps = [line.split() for line in script.splitlines() if line.strip().startswith("step ")]
    assert len(steps) >= 15 and "timeout --kill-after" in function_body(script, "step")
    assert {words[1] for words in steps} <= set(limits), "every step has its limit in LIMIT"
    assert {words[2] for words in steps} <= LOGS
    files = set(re.findall(r"\$out/([\w-]+\.\w+)", script)) | {words[2] for words in steps}
    assert "results.json" in files and len(files) <= 8, sorted(files)


def test_all_runs_the_issues_order_and_its_limits_sum_under_the_deadline():
    """Preflight, the graphs' check, serving (sweep 1/8/32), the profiler, the socket, the peers
    last; no compiled check, int8 or codec-thread sweep; the limits sum under 540 s with margin."""
    limits, order, script = gpu_run_plan()
    assert order == ["gpu", "wheels", "requires", "imports", "check", "serving", "profile", "socket", "faster",
                     "official"]
    preflight = [line.split()[1] for line in function_body(script, "preflight").splitlines()
                 if line.strip().startswith("step ")]
    all_block = re.search(r"^    all\)(.*?);;", script, re.MULTILINE | re.DOTALL).group(1)
    called = re.search(r"ours_ready; then\s*\n\s*(.*)\n", all_block).group(1)
    called = [name.strip() for name in called.split(";") if name.strip()]
    # the kernels' tests run in the background beside check, and are waited for before serving
    assert called[called.index("check") - 1] == "start_kernels" and called[called.index("check") + 1] == "wait_kernels"
    assert called.index("wait_kernels") < called.index("serving")
    assert preflight + [name for name in called if name not in ("start_kernels", "wait_kernels")] == order
    assert limits["kernels"] <= limits["check"]
    assert sum(limits[name] for name in order) <= DEADLINE_S - 30
    # the checkpoint builds in the background beside requires, imports and check: never the wait
    assert limits["checkpoint"] <= limits["requires"] + limits["imports"] + limits["check"]
    assert not {"compiled", "int8", "codec-thread", "checkpoint"} & set(order)
    assert "--sweep 1,8,32 " in function_body(script, "serving") and "64" not in function_body(script, "serving")
    assert "--rows 1,32 " in function_body(script, "profile")
    assert f"GPU_RUN_SECONDS:-{DEADLINE_S}" in script


def dry_run(tmp_path: Path, mode: str, checkpoint: bool,
            preflight_passed: bool = False) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """gpu_run.sh MODE with GPU_RUN_DRY: the steps' commands recorded, nothing run."""
    work, out, wheels, ckpt = (tmp_path / name for name in ("work", "out", "whl", "ckpt"))
    for group in ("ours", "server", "official", "faster"):
        (wheels / group).mkdir(parents=True, exist_ok=True)
        if preflight_passed:  # as an earlier call on the same machine leaves it: no preflight again
            work.mkdir(exist_ok=True)
            (work / f"ok-{group}").touch()
    if checkpoint:
        ckpt.mkdir(exist_ok=True)
        (ckpt / "config.json").write_text("{}")
    env = {**os.environ, "GPU_RUN_DRY": "1", "GPU_RUN_WORK": str(work), "GPU_RUN_CHECKPOINT": str(ckpt),
           "GPU_RUN_WHEELS": str(wheels), "OUT": str(out)}
    done = subprocess.run(["bash", str(GPU_RUN), mode], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    return done, work, out


class Parsed(Exception):
    pass


def parses(monkeypatch, script: str, argv: list[str]) -> None:
    """The script's own argument parser accepts argv (its main() stops right after parsing; --help
    exits 0)."""
    import argparse
    import importlib.util

    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    path = REPO / script
    monkeypatch.syspath_prepend(str(path.parent))  # the peer runners import peer_args beside them
    spec = importlib.util.spec_from_file_location(f"dry_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [str(path), *argv])
    try:
        module.main()
    except Parsed:
        return
    except SystemExit as stop:
        assert stop.code == 0 and "--help" in argv, f"{script} {argv}: exit {stop.code}"
        return
    raise AssertionError(f"{script} {argv}: main() returned without parsing its arguments")


def test_a_dry_run_of_all_records_every_command_and_each_parses_its_arguments(tmp_path, monkeypatch, capsys):
    """Every python command line the GPU run would run: its arguments accepted by its script's
    parser (a typo would lose the one device call), its inline code compiling."""
    done, work, out = dry_run(tmp_path / "no-checkpoint", "all", checkpoint=False)
    results = json.loads((out / "results.json").read_text())
    assert results["steps"]["checkpoint"]["status"] == "ok"  # dry: "built", yet no directory
    assert results["steps"]["imports"]["status"] == "ok" and results["steps"]["serving"]["status"] == "not-run"
    assert done.returncode == 1 and "NOT RUN serving: no 1.7B checkpoint" in done.stdout
    commands = (work / "dry-run.txt").read_text()
    done, work, out = dry_run(tmp_path / "all", "all", checkpoint=True)
    results = json.loads((out / "results.json").read_text())
    limits, order, _ = gpu_run_plan()
    assert done.returncode == 0, done.stdout + done.stderr
    assert [name for name in results["steps"] if name != "kernels"] == order  # kernels: in the background
    assert "kernels" in results["steps"] and all(s["status"] == "ok" for s in results["steps"].values())
    assert results["deadline_s"] == DEADLINE_S and results["limits"] == limits
    assert sorted(path.name for path in out.iterdir()) == ["bench.log", "check.log", "kernels.log", "preflight.log",
                                                           "results.json"]
    commands += (work / "dry-run.txt").read_text()
    for mode in ("compiled", "int8", "codec-thread"):
        done, work, out = dry_run(tmp_path / mode, mode, checkpoint=True, preflight_passed=True)
        assert done.returncode == 0, mode + done.stdout + done.stderr
        steps = json.loads((out / "results.json").read_text())["steps"]
        assert list(steps) == [mode] and steps[mode]["status"] == "ok"
        commands += (work / "dry-run.txt").read_text()
    recorded = [command.split("\x1f")[:-1] for command in commands.split("\x1e")[:-1]]
    assert recorded[0][0] == "nvidia-smi" and all(words[0] in ("python3", "nvidia-smi") for words in recorded)
    lines = [words for words in recorded if words[0] == "python3"]
    scripts = {words[1] for words in lines if words[1].endswith(".py")}
    assert {"tools/gpu_check.py", "benchmarks/serving_bench.py", "benchmarks/gpu_profile.py",
            "benchmarks/socket_bench.py", "benchmarks/bench_engine.py", "benchmarks/make_checkpoint.py",
            "benchmarks/faster_runner.py", "benchmarks/wheel_requirements.py"} <= scripts
    assert any("--compile" in words and "true" in words for words in lines)  # the modes' own steps were there
    checked = 0
    for words in lines:
        if words[1] == "-c":
            compile(words[2], "<gpu_run.sh>", "exec")
        elif words[1] == "-m":
            assert words[2] in ("pip", "pytest")
            if words[2] == "pytest":  # the test files it names exist
                assert all((REPO / word).is_file() for word in words[3:] if word.startswith("tests/")), words
        elif words[1] != "benchmarks/official_runner.py":  # it imports the official qwen_tts at the top
            parses(monkeypatch, words[1], words[2:])
            checked += 1
    capsys.readouterr()
    assert checked >= 15


def test_the_gpu_machine_package_list_reads():
    packages = read_machine_packages()
    assert str(packages["torch"].version) == "2.11.0"
    assert str(packages["transformers"].version) == "5.17.0"
    assert "numpy" in packages and "cffi" not in packages and "soundfile" not in packages


def _wheel(folder: Path, name: str, version: str, *requires: str, python: str = ">=3.8") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    meta = "\n".join([f"Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", f"Requires-Python: {python}"]
                     + [f"Requires-Dist: {r}" for r in requires]) + "\n"
    with zipfile.ZipFile(folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", meta)


def test_the_checker_rejects_a_wheel_set_missing_cffi_and_accepts_it_complete(tmp_path):
    machine = read_machine_packages()
    _wheel(tmp_path / "ours", "soundfile", "0.13.1", "cffi>=1.0", "numpy", 'pywin32; sys_platform == "win32"')
    _wheel(tmp_path / "ours", "soxr", "1.0.0", "numpy", 'pytest; extra == "test"')
    problems = check_groups(wheel_groups(tmp_path), machine, ours=False)
    assert problems and all("cffi" in p for p in problems), problems

    _wheel(tmp_path / "ours", "cffi", "2.0.0", 'pycparser; implementation_name != "PyPy"')
    problems = check_groups(wheel_groups(tmp_path), machine, ours=False)
    assert len(problems) == 1 and "pycparser" in problems[0]  # the next gap, found before the GPU run

    _wheel(tmp_path / "ours", "pycparser", "2.22")
    assert check_groups(wheel_groups(tmp_path), machine, ours=False) == []


def test_carried_wheels_shadow_the_machine_and_versions_are_checked(tmp_path):
    machine = read_machine_packages()  # transformers 5.17.0 there
    _wheel(tmp_path / "official", "qwen-tts", "0.1.1", "transformers==4.57.3", "gradio")
    problems = check_groups(wheel_groups(tmp_path), machine, ours=False)
    assert len(problems) == 1 and "has transformers 5.17.0" in problems[0]
    _wheel(tmp_path / "official", "transformers", "4.57.3", "numpy>=1.17", 'requests; python_version < "3.0"')
    assert check_groups(wheel_groups(tmp_path), machine, ours=False) == []
    assert "gradio" in NOT_IMPORTED  # the one requirement knowingly left behind
    _wheel(tmp_path / "official", "needs-new-python", "1.0", python=">=3.13")
    _wheel(tmp_path / "official", "transformers", "4.57.2")
    problems = check_groups(wheel_groups(tmp_path), machine, ours=False)
    assert any("needs Python >=3.13" in p for p in problems)
    assert any("more than one wheel of transformers" in p for p in problems)


def test_extras_that_a_requirement_asks_for_are_followed():
    from benchmarks.wheel_requirements import Dist
    from packaging.version import Version

    available = {"acme": Dist("acme", Version("1.0"), ['rich; extra == "pretty"', 'nothing-else; extra == "x"'],
                              origin="acme 1.0")}
    assert unmet([("me", "acme", frozenset())], available) == []
    problems = unmet([("me", "acme[pretty]", frozenset())], available)
    assert len(problems) == 1 and "rich" in problems[0]


def test_our_own_dependencies_are_checked_against_ours_and_server(tmp_path):
    _wheel(tmp_path / "ours", "soxr", "1.0.0")
    problems = check_groups(wheel_groups(tmp_path), read_machine_packages())
    assert any("server: wyoming-qwen-tts requires soundfile" in p for p in problems)
    assert any("requires wyoming" in p for p in problems)


def test_every_dependency_of_ours_is_on_the_gpu_machine_or_gathered_by_gpu_wheels():
    """gpu_wheels.sh names what it downloads; a new dependency missing from it (fastapi, emoji)
    was found only when the wheels were gathered before a GPU run: here it is found in CI."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    script = (REPO / "benchmarks" / "gpu_wheels.sh").read_text().replace("\\\n", " ")
    gathered = {canonicalize_name(re.split(r"[=<>!~\[]", word.strip('"'))[0])
                for line in script.splitlines() if line.startswith("get ") for word in line.split()[2:]}
    machine = set(read_machine_packages())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    missing = [text for text in project["dependencies"]
               if canonicalize_name(Requirement(text).name) not in gathered | machine]
    assert not missing, f"add to gpu_wheels.sh: {missing}"


def test_the_checker_runs_as_a_script_and_fails_loudly(tmp_path):
    _wheel(tmp_path / "ours", "soundfile", "0.13.1", "cffi>=1.0")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "wheel_requirements.py"), "wheels", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "UNMET" in done.stderr and "cffi" in done.stderr


def test_gpu_check_compares_runners_and_ties_with_the_real_engine(base_tts, ref_wav):
    """What gpu_check does on a GPU, here on CPU: the same rows through the bucketed and eager
    runners, and the single stream's margins recorded per choice (16 per frame)."""
    sys.path.insert(0, str(REPO))
    from tools import gpu_check

    voice = base_tts.clone_voice(ref_wav, x_vector_only=True)
    requests = [dict(text=t, voice=voice, sampling=SamplingConfig.greedy(), max_frames=6, min_frames=6, seed=None)
                for t in gpu_check.TEXTS[:2]]
    bucketed, batch, _ = gpu_check.run_batch(base_tts, "bucketed", requests, max_len=256)
    eager, _, _ = gpu_check.run_batch(base_tts, "eager", requests, max_len=256)
    assert all(np.array_equal(a, b) and a.shape == (6, 16) for a, b in zip(bucketed, eager))
    margins, best = [], []
    with gpu_check.recording_margins(margins, best):
        single = gpu_check.run_batch(base_tts, "eager", requests[:1])[0][0]
    assert len(margins) == 16 * 6 and min(margins) >= 0
    np.testing.assert_array_equal(single, base_tts.synthesize(**requests[0])[1])
    assert gpu_check.compare_to_single("same", single, bucketed[0], margins, best, 1e-4)
    changed = single.copy()
    changed[3, 5] = (changed[3, 5] + 1) % 16
    assert not gpu_check.compare_to_single("far from a tie", single, changed, margins, best, 0.0)
    assert gpu_check.compare_to_single("any gap is a tie", single, changed, margins, best, float("inf"))


@pytest.mark.parametrize("codec", ["inline", "thread"])
def test_gpu_check_scheduler_pass_agrees_with_single_streams_and_fails_on_a_difference(base_tts, ref_wav, codec):
    sys.path.insert(0, str(REPO))
    from tools import gpu_check

    voice = base_tts.clone_voice(ref_wav, x_vector_only=True)
    requests = [dict(text=t, voice=voice, sampling=SamplingConfig.greedy(), max_frames=5, min_frames=5, seed=None)
                for t in gpu_check.TEXTS[:2]]
    singles = []
    for request in requests:
        margins, best = [], []
        with gpu_check.recording_margins(margins, best):
            singles.append((gpu_check.run_batch(base_tts, "eager", [request])[0][0], margins, best))
    assert gpu_check.check_scheduler(base_tts, codec, requests, singles, 1e-4, runner="bucketed") == 0
    wrong = [(single[::-1].copy(), margins, best) for single, margins, best in singles]  # frames reversed
    assert gpu_check.check_scheduler(base_tts, codec, requests, wrong, 0.0, runner="bucketed") > 0


def test_interval_arithmetic_of_the_profile():
    from benchmarks.gpu_profile import covered, merged, overlap

    assert merged([(5, 7), (0, 2), (1, 3), (7, 8)]) == [(0, 3), (5, 8)]
    assert covered([(0, 2), (1, 3), (10, 11)]) == 4
    assert overlap([(0, 10)], [(2, 3), (5, 12)]) == 6
    assert overlap([(0, 1), (4, 5)], [(1, 4)]) == 0


def test_the_profile_step_runs_on_cpu_and_writes_its_json(tmp_path, monkeypatch):
    """gpu_profile.py's code path, reduced as on CPU: the step at each row count run eagerly, its
    operators counted; the scheduler's loop with the codec inline and on its thread, timed on the
    host; the report written."""
    from benchmarks import gpu_profile

    out = tmp_path / "profile.json"
    monkeypatch.setattr(sys, "argv", [
        "gpu_profile.py", "--checkpoint", str(REPO / "tests" / "fixtures" / "tiny-base"), "--device", "cpu",
        "--dtype", "float32", "--rows", "1,2", "--kv-len", "256", "--timed", "2", "--streams", "2", "--frames", "3",
        "--json", str(out)])
    assert gpu_profile.main() == 0
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["counts"].startswith("operators")
    assert [step["rows"] for step in report["step"]] == [1, 2]
    for step in report["step"]:
        assert step["ops_per_step"] >= step["kernel_ops_per_step"] > 100 and step["step_ms"] > 0
    inline, thread = report["loop"]
    assert (inline["codec"], thread["codec"]) == ("inline", "thread")
    assert inline["decode_threads"] == ["qwen-tts-batch"] and thread["decode_threads"] == ["qwen-tts-codec"]
    for loop in report["loop"]:
        assert loop["steps"] >= 3 and loop["decode_groups"] >= 2 and loop["step_s"] > 0 and loop["decode_s"] > 0
    assert 0 < inline["decode_share_of_batch_thread"] < 1 and inline["decode_overlapping_steps_s"] == 0
    assert thread["decode_share_of_batch_thread"] is None and "gpu_kernels" not in thread


def test_the_profiles_stream_figures_from_raw_profiler_events():
    """What gpu_profile reads from torch.profiler on a GPU, from stand-in events: copies and sets
    left out of the kernels, the steps' stream the busiest, the codec thread's stream the busiest
    other one, and how much of it overlaps a step kernel."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    from benchmarks.gpu_profile import gpu_kernels, stream_figures

    def event(name, start, duration, stream, device=DeviceType.CUDA):
        return SimpleNamespace(device_type=lambda: device, name=lambda: name, start_ns=lambda: start,
                               duration_ns=lambda: duration, device_resource_id=lambda: stream,
                               is_user_annotation=lambda: False)

    events = [event("step_kernel", 0, 100, 7), event("step_kernel", 150, 100, 7), event("step_kernel", 300, 100, 7),
              event("conv_kernel", 80, 40, 20), event("conv_kernel", 260, 30, 20),  # 20 overlapping, 30 not
              event("prompt_kernel", 500, 5, 30), event("Memcpy HtoD (Pinned -> Device)", 10, 5, 7),
              event("Memset (Device)", 20, 5, 7), event("aten::mm", 0, 1000, 0, DeviceType.CPU)]
    prof = SimpleNamespace(profiler=SimpleNamespace(kineto_results=SimpleNamespace(events=lambda: events)))
    kernels, others = gpu_kernels(prof)
    assert len(kernels) == 6 and others == {"Memcpy": 1, "Memset": 1}
    thread = stream_figures(prof, "thread")
    assert thread["steps_stream"] == 7 and thread["codec_stream"] == 20
    assert thread["codec_busy_ms"] == 70 / 1e6 and thread["codec_overlapping_steps_ms"] == 20 / 1e6
    assert abs(thread["codec_overlap_fraction"] - 20 / 70) < 1e-12
    assert thread["by_stream"]["30"] == {"kernels": 1, "busy_ms": 5 / 1e6, "overlapping_steps_ms": 0.0}
    assert thread["gpu_busy_ms"] == (300 + 30 + 5) / 1e6 + 20 / 1e6 and thread["gpu_span_ms"] == 505 / 1e6
    inline = stream_figures(prof, "inline")
    assert "codec_overlap_fraction" not in inline and inline["steps_stream"] == 7


def test_the_runs_summary_prints_the_headline_figures(tmp_path):
    """The device call returns the end of its output: the summary ends it with each step's status
    and the goals' figures from results.json, whatever steps are missing."""
    code = re.search(r"RESULTS_PY='(.*?)\n'\n", GPU_RUN.read_text(), re.DOTALL).group(1)
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    (work / "serving.json").write_text(json.dumps({
        "single_stream": {"first_audio_ms_p50": 61.9, "x_realtime": 3.49, "ms_per_frame": 22.9},
        "sweep": [{"streams": 32, "first_audio_ms_p50": 90.0, "first_audio_ms_p95": 120.4, "x_realtime_min": 1.91}],
        "server_defaults_memory": {"peak_allocated_gib": 4.71, "peak_reserved_gib": 5.2}, "peak_gpu_memory_gib": 11.05}))
    (work / "socket.json").write_text(json.dumps({"sequential": {"first_audio_ms_p50": 70.2},
                                                  "concurrent": [{"clients": 8, "first_audio_ms_p95": 150.0}]}))

    def results(*args: str) -> str:
        return subprocess.run([sys.executable, "-c", code, str(out), str(work), *args], capture_output=True, text=True,
                              check=True).stdout

    results("step", "serving", "ok", "50", "85")
    results("step", "socket", "timed-out", "60", "60")
    results("step", "profile", "skipped", "0", "65")
    summary = results("summary")
    assert "serving" in summary and "timed-out" in summary and "failed steps: socket profile" in summary
    assert "one stream: first audio p50 ms 62, x real time 3.49, ms per frame 22.9" in summary
    assert "32 streams: first audio p50 ms 90, p95 ms 120, slowest x real time 1.91" in summary
    assert "memory GiB: 8-row server peak 4.71, reserved 5.20, run peak 11.05" in summary
    assert "socket: first audio p50 ms 70, 8 clients p95 ms 150" in summary
    saved = json.loads((out / "results.json").read_text())
    assert saved["failed_steps"] == ["socket", "profile"] and saved["serving"]["peak_gpu_memory_gib"] == 11.05
