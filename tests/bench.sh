#!/usr/bin/env bash
# The benchmarks beside the peers. Installs the peers by package name (jupyter-collaboration and
# pycrdt-websocket from PyPI into target/bench/venv, Hocuspocus and @y/websocket-server from npm
# into tests/bench/node_modules, y-sweet from crates.io into target/bench/peers), builds Quire and
# the load generator in release, and runs every scenario against every server in turn.
#
#   tests/bench.sh             the full setting: target/bench/results.json and BENCHMARKS.md
#   tests/bench.sh --quick     the quick setting (CI runs it as a smoke test through cargo test)
#   tests/bench.sh --install   only installs the peers (tests/run-all.sh does this)
#
# Other arguments go to quire-bench: --only S1,S5   --servers quire,hocuspocus   --report FILE
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
venv=$target/bench/venv
if ! "$venv/bin/python" -c 'import jupyter_collaboration, pycrdt.websocket, uvicorn, websockets, ipykernel' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/bench/requirements.txt
fi
[ tests/bench/node_modules/.package-lock.json -nt tests/bench/package-lock.json ] ||
  npm ci --prefix tests/bench --no-audit --no-fund
if [ ! -x "$target/bench/peers/bin/y-sweet" ]; then
  # --locked: y-sweet 0.9.1 does not build against today's newest versions of its dependencies.
  cargo install y-sweet --version 0.9.1 --locked --quiet --root "$target/bench/peers"
fi
if [ "${1:-}" = --install ]; then
  exit 0
fi
# Ten thousand connections need as many descriptors in the load generator and in each server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release -p quire-server --bin quire -p quire-tests --bin quire-bench --bin bare-broadcast
export QUIRE_BIN=$target/release/quire
# S7 starts kernels from this Python's ipykernel.
export QUIRE_TEST_PYTHON=$venv/bin/python
exec "$target/release/quire-bench" "$@"
