#!/usr/bin/env bash
# Python WSGI apps: forkd's Python package (`pip install .`, a release build with maturin)
# against Gunicorn sync, Gunicorn gthread and Granian (`--interface wsgi`), 2 workers
# each, on this machine, in one run.
#
#   bench/wsgi.sh     # needs a Rust toolchain and python3; installs wrk, curl and
#                     # python3-venv (apt) if missing; builds forkd and installs everything
#                     # else (pip) into a fresh virtualenv in the run's temp dir
#
# Apps: bench/wsgi_hello.py (raw WSGI hello) and bench/wsgi_django.py (a Django JSON view,
# GET /items/42?q=hello). THREADS (default 4) threads per worker for forkd, Gunicorn
# gthread and Granian (--blocking-threads); Gunicorn sync has one. For each app, ROUNDS
# rounds, the servers alternating within a round, wrk -t2 for DURATION seconds at -c64
# and -c256: req/s, p99, CPU per request and worker RSS under load; then HUPS HUPs under
# 64 keep-alive connections per server, every failed request counted
# (bench/loadcount.py). bench/wsgi_bench.py measures (with bench/asgi_bench.py's
# machinery) and appends a dated section to bench/RESULTS.md (or $RESULTS).
# Instructions per request of forkd's WSGI path (needs valgrind):
#   bench/instructions.py --asgi wsgi_hello:app DIR   (the app's interface is detected)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d /tmp/forkd-bench-wsgi.XXXXXX)
cleanup() {
  [ -n "${KEEP_WORK:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT

command -v cargo >/dev/null 2>&1 || { echo "wsgi.sh: needs a Rust toolchain (cargo) for pip install ." >&2; exit 1; }
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
"${PIP[@]}" gunicorn granian django
echo "== pip install . (release build of forkd's Python package; minutes on a busy machine)" >&2
"${PIP[@]}" "$ROOT"
WORK=$WORK VENV=$WORK/venv "$WORK/venv/bin/python" bench/wsgi_bench.py
