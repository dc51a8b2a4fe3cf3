#!/usr/bin/env bash
# preload_app (issue 23): a zygote per generation, against forkd without preload and
# Gunicorn with --preload (UvicornWorker), 4 workers each, serving a FastAPI app that
# makes about 60 MB of Python objects at import (bench/preload_app.py): the workers'
# summed RSS and PSS, a new worker's start time (a fork from the zygote vs an import),
# HUP to new code and the requests failed meanwhile. bench/preload_bench.py measures
# and appends a dated section to bench/RESULTS.md (or $RESULTS). A few minutes after
# the build.
#
#   bench/preload.sh                      # builds forkd's Python package (pip install .,
#                                         # a release build) into a fresh virtualenv with
#                                         # FastAPI, uvicorn and gunicorn, in a temp dir
#   FORKD_WHEEL=path.whl bench/preload.sh # installs that wheel of forkd instead
#   ROUNDS=9 bench/preload.sh             # worker-start rounds per server (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d /tmp/forkd-bench-preload.XXXXXX)
cleanup() {
  # preload_bench.py stops every server it started (its own session); the temp dir goes.
  [ -n "${KEEP_WORK:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
python3 -c "import ensurepip, venv" 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
echo "== forkd at $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" status --porcelain --untracked-files=no | grep -q . && echo ' (with uncommitted changes)')" >&2
python3 -m venv "$WORK/venv"
PIP=("$WORK/venv/bin/pip" install -q --disable-pip-version-check)
"${PIP[@]}" uvloop httptools fastapi gunicorn uvicorn
if [ -n "${FORKD_WHEEL:-}" ]; then
  "${PIP[@]}" "$FORKD_WHEEL"
else
  command -v cargo >/dev/null 2>&1 || { echo "preload.sh: needs a Rust toolchain (cargo) for pip install ." >&2; exit 1; }
  echo "== pip install . (release build of forkd's Python package; minutes on a busy machine)" >&2
  "${PIP[@]}" "$ROOT"
fi
WORK=$WORK VENV=$WORK/venv "$WORK/venv/bin/python" bench/preload_bench.py
