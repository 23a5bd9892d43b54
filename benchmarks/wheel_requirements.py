"""Does every gathered wheel find what it requires on the GPU machine? That machine reaches no
package registry: whatever is missing there must travel as a wheel, and one missing requirement
(soundfile's cffi, say) ends a whole GPU run at its first import.

    # here, after gathering (benchmarks/gpu_wheels.sh runs this):
    python3 benchmarks/wheel_requirements.py wheels .whl
    # there, after installing each group into /tmp/site-GROUP (gpu_run.sh's preflight):
    python3 benchmarks/wheel_requirements.py installed /tmp/site-ours /tmp/site-server ...

`wheels` reads each wheel's METADATA and checks its Requires-Dist, and our own pyproject's
dependencies, evaluated for CPython 3.12 on x86-64 Linux, against: the wheels of its group (one
folder of .whl), the groups always on the path beside it (ours), then the machine's own
packages (benchmarks/gpu_machine_packages.txt). A carried wheel shadows the machine's package of
the same name. A machine package listed without a version satisfies any version (the preflight
then checks the versions really installed). `installed` does the same with the distributions
Python really finds there. Exits 1, naming every unmet requirement, if any is unmet.
"""

from __future__ import annotations

import argparse
import email.parser
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

REPO = Path(__file__).resolve().parents[1]
MACHINE_PACKAGES = REPO / "benchmarks" / "gpu_machine_packages.txt"
TARGET = {  # the GPU machine's interpreter, for environment markers
    "python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
    "implementation_version": "3.12.3", "platform_python_implementation": "CPython", "os_name": "posix",
    "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
}
ALWAYS_ON_PATH = ("ours",)  # gpu_run.sh puts this group on PYTHONPATH for every mode
# Required in METADATA but imported by nothing we run (the preflight's imports prove it there).
NOT_IMPORTED = {
    "gradio": "only the web demos of qwen-tts and qwen-tts-hf (qwen_tts/cli/demo.py) import it",
}


@dataclass
class Dist:
    name: str  # canonical
    version: Version | None  # None: present, version not known
    requires: list[str] = field(default_factory=list)
    requires_python: str | None = None
    origin: str = ""


def _dist_from_metadata(text: str, origin: str) -> Dist:
    meta = email.parser.Parser().parsestr(text)
    return Dist(canonicalize_name(meta["Name"]), Version(meta["Version"]), meta.get_all("Requires-Dist") or [],
                meta.get("Requires-Python"), origin)


def read_wheel(path: Path) -> Dist:
    with zipfile.ZipFile(path) as wheel:
        names = [n for n in wheel.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise ValueError(f"{path.name}: no single .dist-info/METADATA")
        return _dist_from_metadata(wheel.read(names[0]).decode("utf-8"), path.name)


def read_machine_packages(path: Path = MACHINE_PACKAGES) -> dict[str, Dist]:
    """`name` or `name==version` per line; # starts a comment."""
    packages = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        try:
            packages[canonicalize_name(name.strip())] = Dist(canonicalize_name(name.strip()),
                                                             Version(version.strip()) if version else None,
                                                             origin="the GPU machine")
        except InvalidVersion as err:
            raise ValueError(f"{path}:{number}: {err}") from err
    return packages


def applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**TARGET, "extra": extra}) for extra in (extras or {""}))


def unmet(wanted: list[tuple[str, str, frozenset[str]]], available: dict[str, Dist],
          absent: str = "is neither carried nor on the GPU machine") -> list[str]:
    """Problems with requirement strings (who, requirement, extras of `who` in force) given what
    is available by canonical name; follows the extras a requirement asks of a wheel."""
    problems, queue, done = [], list(wanted), set()
    while queue:
        who, text, extras = queue.pop()
        requirement = Requirement(text)
        if not applies(requirement, extras) or (who, text, extras) in done:
            continue
        done.add((who, text, extras))
        name = canonicalize_name(requirement.name)
        dist = available.get(name)
        if dist is None and name in NOT_IMPORTED:
            continue
        if dist is None:
            problems.append(f"{who} requires {text}: {requirement.name} {absent}")
            continue
        if dist.version is not None and requirement.specifier and \
                not requirement.specifier.contains(dist.version, prereleases=True):
            problems.append(f"{who} requires {text}: {dist.origin} has {dist.name} {dist.version}")
        if requirement.extras:
            queue += [(dist.origin, r, frozenset(requirement.extras)) for r in dist.requires]
    return problems


def _own_requirements() -> list[tuple[str, str, frozenset[str]]]:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [("wyoming-qwen-tts", text, frozenset()) for text in project["dependencies"]]


def check_groups(groups: dict[str, list[Dist]], machine: dict[str, Dist], ours: bool = True) -> list[str]:
    """Each group on top of the always-present groups on top of the machine: every wheel's
    requirements met, one version per package, Requires-Python accepting 3.12; and (ours) our
    own dependencies met by the machine, ours and server, as the server runs."""
    problems = []
    for group, dists in groups.items():
        names = [d.name for d in dists]
        problems += [f"{group}: more than one wheel of {name} (the install would fail)"
                     for name in sorted({n for n in names if names.count(n) > 1})]
        problems += [f"{group}: {d.origin} needs Python {d.requires_python}" for d in dists
                     if d.requires_python and not Requirement(f"python{d.requires_python}").specifier.contains(
                         TARGET["python_full_version"])]
        layers = [g for g in ALWAYS_ON_PATH if g in groups and g != group] + [group]
        wanted = [(d.origin, r, frozenset()) for d in dists for r in d.requires]
        problems += [f"{group}: {p}" for p in unmet(wanted, _layered(machine, groups, layers))]
    if ours:
        problems += [f"server: {p}" for p in unmet(_own_requirements(), _layered(machine, groups, ["ours", "server"]))]
    return list(dict.fromkeys(problems))


def _layered(machine: dict[str, Dist], groups: dict[str, list[Dist]], layers: list[str]) -> dict[str, Dist]:
    available = dict(machine)
    for layer in layers:
        available.update({d.name: d for d in groups.get(layer, [])})  # carried wheels shadow the machine's
    return available


def wheel_groups(root: Path) -> dict[str, list[Dist]]:
    return {folder.name: [read_wheel(path) for path in sorted(folder.glob("*.whl"))]
            for folder in sorted(root.iterdir()) if folder.is_dir()}


def installed_problems(sites: list[Path], ours: bool) -> list[str]:
    """On the GPU machine: the requirements of everything installed into `sites` (and, with
    `ours`, our own), met by what Python finds first on sites + sys.path (as PYTHONPATH puts them)."""
    from importlib import metadata

    def found(dist) -> Dist:
        name = canonicalize_name(dist.metadata["Name"])
        return Dist(name, Version(dist.version), dist.requires or [], origin=f"{name} {dist.version}")

    available: dict[str, Dist] = {}
    for dist in metadata.distributions(path=[str(s) for s in sites] + sys.path):
        available.setdefault(canonicalize_name(dist.metadata["Name"]), found(dist))  # the first on the path wins
    carried = [found(dist) for dist in metadata.distributions(path=[str(s) for s in sites])]
    wanted = [(d.origin, r, frozenset()) for d in carried for r in d.requires] + (_own_requirements() if ours else [])
    return unmet(wanted, available, absent="is not installed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    wheels = sub.add_parser("wheels", help="check gathered wheels here, against the machine's package list")
    wheels.add_argument("root", type=Path, help="folder of groups, one folder of .whl each")
    wheels.add_argument("--machine", type=Path, default=MACHINE_PACKAGES)
    installed = sub.add_parser("installed", help="check what is really installed (on the GPU machine)")
    installed.add_argument("sites", type=Path, nargs="*")
    installed.add_argument("--ours", action="store_true", help="also our pyproject's dependencies")
    args = parser.parse_args()
    if args.mode == "wheels":
        groups = wheel_groups(args.root)
        problems = check_groups(groups, read_machine_packages(args.machine))
        counted = ", ".join(f"{name} {len(dists)}" for name, dists in groups.items())
    else:
        problems = installed_problems(args.sites, args.ours)
        counted = ", ".join(str(site) for site in args.sites)
    for problem in problems:
        print(f"UNMET: {problem}", file=sys.stderr)
    print(f"requirements {'UNMET: ' + str(len(problems)) if problems else 'all met'} ({counted})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
