"""Security rules: no pickle anywhere in the package, request data never names a file, the
container does not run as root."""

import ast
from pathlib import Path

import pytest
from wyoming.tts import Synthesize, SynthesizeVoice

from .server_harness import REPO
from .standin import exchange, run

PACKAGE = REPO / "wyoming_qwen_tts"
PICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal"}
# The modules a request's data passes through before it reaches a voice by name.
REQUEST_MODULES = ["handler.py", "reading.py", "answering.py", "writing.py", "protocol.py", "request_text.py"]
FILE_SYSTEM = {"os", "pathlib", "shutil", "io", "tempfile", "glob", "Path", "open"}


def pickle_uses(source: str) -> list[str]:
    """What in this source can unpickle: torch.load, pickle & co., numpy loads allowing pickles."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] in PICKLING_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in PICKLING_MODULES or (node.module == "torch" and any(
                    alias.name == "load" for alias in node.names)):
                found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "torch" and node.attr == "load" or node.value.id in PICKLING_MODULES:
                found.append(f"{node.value.id}.{node.attr}")
        elif isinstance(node, ast.Call) and any(
                keyword.arg == "allow_pickle" and not (isinstance(keyword.value, ast.Constant)
                                                        and keyword.value.value is False)
                for keyword in node.keywords):
            found.append(ast.unparse(node))
    return found


def file_system_names(source: str) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and node.id in FILE_SYSTEM:
            names.append(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            names += [module for module in modules if module.split(".")[0] in FILE_SYSTEM]
    return names


@pytest.mark.parametrize("source", [
    "import torch\nweights = torch.load('x.pt')",
    "from torch import load",
    "import pickle",
    "from pickle import loads",
    "import numpy as np\nnp.load('x.npy', allow_pickle=True)",
    "numpy.load(path, allow_pickle=flag)",
])
def test_the_pickle_check_finds_every_way_in(source):
    assert pickle_uses(source)


def test_nothing_in_the_package_can_unpickle():
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 20  # the engine is scanned too
    found = {str(path.relative_to(REPO)): uses for path in sources if (uses := pickle_uses(path.read_text()))}
    assert found == {}
    assert not pickle_uses("np.load('x.npz', allow_pickle=False)")


def test_request_handling_never_touches_the_file_system():
    found = {name: names for name in REQUEST_MODULES if (names := file_system_names((PACKAGE / name).read_text()))}
    assert found == {}
    assert file_system_names("from pathlib import Path\nPath(name).read_text()")  # the check itself works


@pytest.mark.parametrize("name", ["../../../etc/passwd", "/etc/passwd", "ann/../fritz", "fritz\x00", "~root", "."])
def test_a_voice_name_only_picks_a_voice_of_the_catalog(name):
    async def scenario(server, speaker):
        await exchange(server, Synthesize(text="Hello.", voice=SynthesizeVoice(name=name)).event())
        return speaker.said

    assert [voice for voice, _, _ in run(scenario)] == ["ann"]  # the default voice, nothing else


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        current += " " + line.rstrip("\\").strip() if current else line.rstrip("\\").strip()
        if not line.endswith("\\"):
            lines.append(current)
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cpu"])
def test_the_container_runs_as_an_unprivileged_user(dockerfile):
    instructions = dockerfile_instructions(REPO / "docker" / dockerfile)
    last_stage = instructions[max(i for i, (kind, _) in enumerate(instructions) if kind == "FROM"):]
    users = [(i, arguments) for i, (kind, arguments) in enumerate(last_stage) if kind == "USER"]
    assert users, "no USER in the final stage: the container would run as root"
    index, user = users[-1]
    name, _, group = user.partition(":")
    assert name not in ("root", "0") and group not in ("root", "0")
    entrypoint = max(i for i, (kind, _) in enumerate(last_stage) if kind in ("ENTRYPOINT", "CMD"))
    assert index < entrypoint
