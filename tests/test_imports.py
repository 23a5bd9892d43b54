"""The package's import graph: no cycles, the engine stands alone, the protocol side needs no torch.

Every import statement of every module under wyoming_qwen_tts/ counts, wherever it is: at module
level, under `if TYPE_CHECKING:` (a cycle there is still a cycle in the design, and one refactor away
from a real one) and inside functions. Imports made by name at run time (importlib) are not seen.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent
PACKAGE = "wyoming_qwen_tts"
ENGINE = f"{PACKAGE}.engine"
# Imported by the server before a model is loaded: they must not pull in torch (seconds, and GBs).
PROTOCOL_MODULES = [f"{PACKAGE}.handler", f"{PACKAGE}.voices", f"{PACKAGE}.request_text", f"{PACKAGE}.speech", f"{PACKAGE}.__main__",
                    f"{PACKAGE}.model_lifecycle", f"{PACKAGE}.metrics"]

Graph = dict[str, dict[str, int]]  # module -> {module it imports: line of the first such import}


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package under root/package, by dotted name (a package by its __init__)."""
    files = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def import_graph(root: Path, package: str) -> Graph:
    files = module_files(root, package)
    return {module: imports_of(module, path, set(files)) for module, path in files.items()}


def imports_of(module: str, path: Path, known: set[str]) -> dict[str, int]:
    """The package's modules this module imports, each with the line of its first import."""
    is_package = path.name == "__init__.py"
    found: dict[str, int] = {}

    def add(name: str, line: int) -> None:
        while name and name not in known:  # "import pkg.mod.Name"-like leftovers: the module that holds them
            name = name.rpartition(".")[0]
        if name and name != module:
            found.setdefault(name, line)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = resolve_from(module, is_package, node.level, node.module)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"  # "from . import x" where x is a module
                add(submodule if submodule in known else base, node.lineno)
    return found


def resolve_from(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module if is_package else module.rpartition(".")[0]
    for _ in range(level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{name}" if name else base


def cycles(graph: Graph) -> list[list[str]]:
    """The import cycles: for each strongly connected component of more than one module, one cycle
    through it as a path [a, b, ..., a]."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [cycle_through(graph, component) for component in components]


def cycle_through(graph: Graph, component: list[str]) -> list[str]:
    """A shortest cycle from the component's first module back to it, within the component."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph.get(node, {})):
            if target == start:
                return paths[node] + [start]
            if target in members and target not in paths:
                paths[target] = paths[node] + [target]
                queue.append(target)
    raise AssertionError(f"no cycle through {component}")


def describe(graph: Graph, cycle: list[str]) -> str:
    """a -(line 3)-> b -(line 9)-> a: a imports b at its line 3, b imports a at its line 9."""
    return cycle[0] + "".join(f" -(line {graph[a][b]})-> {b}" for a, b in zip(cycle, cycle[1:]))


def outside_engine(graph: Graph, engine: str) -> list[str]:
    """Imports from a module of the engine package of a package module outside it."""
    def in_engine(name: str) -> bool:
        return name == engine or name.startswith(engine + ".")
    return [f"{module} (line {line}) imports {target}" for module, targets in sorted(graph.items())
            if in_engine(module) for target, line in sorted(targets.items()) if not in_engine(target)]


def modules_pulled_in(modules: list[str], watched: str, path: Path) -> list[str]:
    """The modules after whose import, in a fresh interpreter, `watched` is in sys.modules."""
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            f"    if {watched!r} in sys.modules:\n"
            "        print(name)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=path, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


# -- the package ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph(REPO, PACKAGE)


def test_the_package_has_no_import_cycle(graph):
    found = cycles(graph)
    if found:
        pytest.fail("import cycles among the package's modules:\n" + "\n".join(describe(graph, c) for c in found),
                    pytrace=False)


def test_the_engine_imports_nothing_of_the_package_outside_it(graph):
    assert any(module.startswith(ENGINE + ".") for module in graph)
    assert outside_engine(graph, ENGINE) == []


def test_the_protocol_side_imports_no_torch():
    assert modules_pulled_in(PROTOCOL_MODULES, "torch", REPO) == []


# -- the checks themselves, on made-up packages ---------------------------------------------------------

def make_package(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root


TOY = {
    "toy/__init__.py": "",
    "toy/a.py": "from . import b\n",  # a submodule imported by name
    "toy/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import Thing\n",
    "toy/c.py": "def late():\n    import toy.a\n",  # inside a function, absolute: closes a -> b -> c -> a
    "toy/d.py": "from .e import f\n",
    "toy/e/__init__.py": "from ..d import x\n",  # a package and a two-dot import: d <-> e
    "toy/ok.py": "import os\nfrom .a import y\nfrom .e import g\n",
    "toy/engine/__init__.py": "",
    "toy/engine/core.py": "from . import util\nfrom .util import z\n",
    "toy/engine/util.py": "import json\n",
}


def test_the_graph_counts_every_kind_of_import(tmp_path):
    toy = import_graph(make_package(tmp_path, TOY), "toy")
    assert toy["toy.a"] == {"toy.b": 1}
    assert toy["toy.b"] == {"toy.c": 3}
    assert toy["toy.c"] == {"toy.a": 2}
    assert toy["toy.d"] == {"toy.e": 1}
    assert toy["toy.e"] == {"toy.d": 1}
    assert toy["toy.ok"] == {"toy.a": 2, "toy.e": 3}
    assert toy["toy.engine.core"] == {"toy.engine.util": 1}


def test_cycles_are_found_and_named(tmp_path):
    toy = import_graph(make_package(tmp_path, TOY), "toy")
    assert cycles(toy) == [["toy.a", "toy.b", "toy.c", "toy.a"], ["toy.d", "toy.e", "toy.d"]]
    assert describe(toy, ["toy.d", "toy.e", "toy.d"]) == "toy.d -(line 1)-> toy.e -(line 1)-> toy.d"
    del toy["toy.c"]["toy.a"], toy["toy.e"]["toy.d"]
    assert cycles(toy) == []


def test_an_engine_import_from_outside_is_found(tmp_path):
    files = dict(TOY)
    files["toy/engine/util.py"] = "import json\n\ndef helper():\n    from ..ok import y\n"
    files["toy/engine/core.py"] = "from .. import a\n"
    toy = import_graph(make_package(tmp_path, files), "toy")
    assert outside_engine(toy, "toy.engine") == ["toy.engine.core (line 1) imports toy.a",
                                                 "toy.engine.util (line 4) imports toy.ok"]
    assert outside_engine(import_graph(make_package(tmp_path / "clean", TOY), "toy"), "toy.engine") == []


def test_a_module_that_pulls_in_the_watched_one_is_named(tmp_path):
    make_package(tmp_path, {"toy/__init__.py": "", "toy/plain.py": "import os\n",
                            "toy/heavy.py": "def f():\n    pass\nimport fractions\n", "toy/after.py": ""})
    assert modules_pulled_in(["toy.plain", "toy.heavy", "toy.after"], "fractions", tmp_path) == ["toy.heavy",
                                                                                                 "toy.after"]
