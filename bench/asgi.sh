#!/usr/bin/env bash
# Python ASGI apps: forkd's Python package (`pip install .`, a release build with maturin)
# against Gunicorn + UvicornWorker, `uvicorn --workers 2`, Granian (`--interface asgi`) and
# Gunicorn `-k asgi` (when the installed Gunicorn has it), 2 workers each, on this
# machine, in one run.
#
#   bench/asgi.sh     # needs a Rust toolchain and python3; installs wrk, curl and
#                     # python3-venv (apt) if missing; builds forkd and installs everything
#                     # else (pip) into a fresh virtualenv in the run's temp dir
#
# For a quicker look at one server (CPU per request, RSS/PSS per worker) while changing
# forkd's Python package: bench/asgi_cost.py; instructions per request: bench/instructions.py
# --asgi asgi_hello:app; wake-ups and system calls per request, per thread:
# bench/asgi_wakeups.sh; an app's own CPU per request with no server (the floor under every
# server's): bench/asgi_floor.py.
#
# Apps: bench/asgi_hello.py (raw ASGI hello) and bench/asgi_fastapi.py (a FastAPI JSON
# endpoint, GET /items/42?q=hello). For each app, ROUNDS rounds, the servers alternating
# within a round, wrk -t2 for DURATION seconds at -c64 and -c256: req/s, p99, CPU per
# request (the workers' utime+stime from /proc over the run / requests) and worker RSS
# under load (VmRSS per worker). Then, one server at a time, HUPS HUPs to the master
# HUP_EVERY seconds apart under 64 keep-alive connections from bench/loadcount.py, which
# counts every failed request by kind. bench/asgi_bench.py does the measuring and appends
# a dated section to bench/RESULTS.md (or $RESULTS). About 10 minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d /tmp/forkd-bench-asgi.XXXXXX)
cleanup() {
  # bench/asgi_bench.py stops every server it started (TERM to the master, then SIGKILL
  # to that server's own session); here only the temp dir goes.
  [ -n "${KEEP_WORK:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT

command -v cargo >/dev/null 2>&1 || { echo "asgi.sh: needs a Rust toolchain (cargo) for pip install ." >&2; exit 1; }
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v curl >/dev/null 2>&1 || missing+=(curl)
python3 -c "import ensurepip, venv" 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "== forkd at $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" status --porcelain --untracked-files=no | grep -q . && echo ' (with uncommitted changes)')" >&2
python3 -m venv "$WORK/venv"
PIP=("$WORK/venv/bin/pip" install -q --disable-pip-version-check)
"${PIP[@]}" uvloop httptools fastapi gunicorn uvicorn granian
echo "== pip install . (release build of forkd's Python package; minutes on a busy machine)" >&2
"${PIP[@]}" "$ROOT"
# The bench runs with the venv's python; none of the servers is run from the repo's python/.
WORK=$WORK VENV=$WORK/venv "$WORK/venv/bin/python" bench/asgi_bench.py
