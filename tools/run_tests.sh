#!/usr/bin/env bash
# Run the test suite on a fresh machine: makes .venv (CPU torch 2.13.0), installs the package with
# its test extras, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
# Pinned first: an unpinned torch may resolve to a multi-GB CUDA build.
"$venv/bin/python" -m pip install -q torch==2.13.0
"$venv/bin/python" -m pip install -q -e ".[test]"
exec "$venv/bin/python" -m pytest "$@"
