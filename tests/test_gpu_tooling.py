"""The GPU run's tooling, checked here: the scripts parse, the GPU machine's package list reads,
the wheel requirement checker catches a missing requirement (soundfile's cffi was the first), and
gpu_check's comparisons behave on CPU with the real engine."""

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


def test_gpu_run_puts_every_step_under_a_timeout_and_writes_at_most_8_result_files():
    script = (REPO / "benchmarks" / "gpu_run.sh").read_text()
    steps = [line.split() for line in script.splitlines() if line.strip().startswith("step ")]
    assert len(steps) >= 10 and all(words[1].isdigit() for words in steps)
    assert "timeout --kill-after" in script
    files = set(re.findall(r"\$out/([\w-]+\.\w+)", script)) | {words[2] for words in steps}
    assert {"preflight.log", "check.log", "bench.log", "server.log"} <= files and len(files) <= 8, sorted(files)


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
