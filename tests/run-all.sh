#!/usr/bin/env bash
# Runs every test: prepares the Python environment the end-to-end tests drive (pycrdt,
# jupyter_ydoc, nbformat from PyPI) in tests/.venv, the npm packages in tests/js and the
# benchmarks' peers (tests/bench.sh --install), then every test target of the workspace, and closes with one "N passed, N failed" line summing all test
# binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x tests/.venv/bin/python ] || ! tests/.venv/bin/python -c 'import pycrdt, jupyter_ydoc, nbformat, websockets, ipykernel' 2>/dev/null; then
  python3 -m venv tests/.venv
  tests/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/py/requirements.txt
fi
# JupyterLab's own JavaScript stack (yjs, y-websocket, @jupyter/ydoc), reinstalled when the
# lockfile is newer than what is installed.
[ tests/js/node_modules/.package-lock.json -nt tests/js/package-lock.json ] ||
  npm ci --prefix tests/js --omit=optional --no-audit --no-fund
# The benchmarks' peers (jupyter-collaboration, pycrdt-websocket, Hocuspocus, y-websocket-server,
# y-sweet), for the benchmarks' smoke test.
tests/bench.sh --install
# The browser tests drive Debian's Chromium (never a downloaded browser build).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
export QUIRE_TEST_PYTHON="$PWD/tests/.venv/bin/python"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
