#!/usr/bin/env bash
# Chaos figures: what Quire does when the server is killed mid-stream, when saves meet a full
# disk or a read-only file, when a kernel dies during a run, and beside a client that never
# reads. Builds Quire and quire-chaos in release and prints the figures (a table at the end,
# also in target/chaos/results.json). Not a test: it asserts nothing, CI does not run it, and
# it stops by itself (every loop is bounded; about three minutes). Loopback only.
#
#   tests/chaos.sh              every scenario
#   tests/chaos.sh --only 1,3   some of them (1 kill -9, 2 saves in trouble, 3 kernel, 4 stall)
#
# The disk-full case mounts a small tmpfs and the read-only directory a read-only bind mount:
# both need root and are skipped (with a note) without it. The kernel case needs a Python with
# ipykernel: QUIRE_TEST_PYTHON, else tests/.venv (tests/run-all.sh makes it).
# The servers' own logs go to target/chaos/server.log.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -p quire-server --bin quire -p quire-tests --bin quire-chaos
export QUIRE_BIN=$target/release/quire
mkdir -p "$target/chaos"
"$target/release/quire-chaos" "$@" 2>"$target/chaos/server.log"
