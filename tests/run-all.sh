#!/usr/bin/env bash
# Runs every test: prepares the Python environment the end-to-end tests drive (pycrdt,
# jupyter_ydoc, nbformat from PyPI) in tests/.venv, then the whole Cargo workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x tests/.venv/bin/python ] || ! tests/.venv/bin/python -c 'import pycrdt, jupyter_ydoc, nbformat, websockets' 2>/dev/null; then
  python3 -m venv tests/.venv
  tests/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/py/requirements.txt
fi
export QUIRE_TEST_PYTHON="$PWD/tests/.venv/bin/python"
cargo test --workspace "$@"
