#!/usr/bin/env bash
# The whole benchmark, on a fresh Debian machine: installs wrk, nginx, valgrind and
# strace (apt), gunicorn, uvicorn, uvloop and httptools (pip), builds forkd --release and
# the plain hyper server, waits for a quiet machine, then runs
#   compare.py   forkd vs nginx vs Gunicorn + UvicornWorker vs plain hyper (-c64, -c256)
#   probes.py    start to first response, TTIN to serving, spread across workers, wake-ups
#   variants.py  threads = 1 vs 2, allocators, release profiles, panic strategy
#   allocs.py    heap allocations per hello request (valgrind DHAT)
#   epoll_exclusive.py  the thundering herd with and without EPOLLEXCLUSIVE
#   reuse_port.py  SO_REUSEPORT vs the shared accept queue: spread, and failures in reloads
# and appends a section with the tables and the targets to bench/RESULTS.md.
#
#   bench/run.sh                       # everything (about 20 minutes on 2 cores)
#   PARTS="compare probes" bench/run.sh
#   QUIET_WAIT_MIN=0 bench/run.sh      # do not wait for a quiet machine
#   RECORD=0 bench/run.sh              # print the section, do not append it
#   PARTS=compare COMPARE_ARGS="--servers forkd,hyper,nginx --rounds 5" bench/run.sh
#                                      # forkd vs plain hyper vs nginx only (issue 13 item 8)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PARTS=${PARTS:-compare probes variants allocs epoll reuseport}
QUIET_WAIT_MIN=${QUIET_WAIT_MIN:-20}
RECORD=${RECORD:-1}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! [ -x /usr/sbin/nginx ] || ! need valgrind || ! need strace; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx valgrind strace >/dev/null
fi
if ! python3 -c 'import gunicorn, uvicorn, uvloop, httptools' 2>/dev/null; then
  python3 -m pip install -q gunicorn uvicorn uvloop httptools
fi
cargo build --release -q
(cd bench/hyper-hello && cargo build --release -q)

OUT=$(mktemp -d /tmp/forkd-bench-run.XXXXXX)
cd bench

# Other processes compiling on the machine make the numbers noisy: wait (polling every
# minute, up to QUIET_WAIT_MIN minutes) until the CPU is at least 90% idle for 10 s.
waited=0
conditions=""
while :; do
  idle=$(python3 -c 'import benchlib; print(round(benchlib.cpu_idle_fraction(10) * 100))')
  if [ "$idle" -ge 90 ]; then
    conditions="CPU ${idle}% idle over 10 s before the run (waited ${waited} min for it)"
    break
  fi
  if [ "$waited" -ge "$QUIET_WAIT_MIN" ]; then
    conditions="NOT quiet: CPU only ${idle}% idle before the run after waiting ${waited} min; busy: $(python3 -c 'import benchlib; print(", ".join(benchlib.busy_processes(10)) or "?")')"
    break
  fi
  echo "bench: machine busy (${idle}% idle); waiting a minute" >&2
  sleep 60
  waited=$((waited + 1))
done
echo "bench: $conditions" >&2
python3 -c 'import benchlib, json, sys; json.dump(benchlib.machine(), open(sys.argv[1], "w"))' "$OUT/machine.json"

for part in $PARTS; do
  case $part in
    compare) python3 compare.py ${COMPARE_ARGS:-} --json "$OUT/throughput.json" ;;
    probes) python3 probes.py --json "$OUT/probes.json" ;;
    variants) python3 variants.py --json "$OUT/variants.json" ;;
    allocs) python3 allocs.py --json "$OUT/allocs.json" ;;
    epoll) python3 epoll_exclusive.py --json "$OUT/epoll.json" ;;
    reuseport) python3 reuse_port.py --json "$OUT/reuseport.json" ;;
    *) echo "bench: unknown part $part (compare, probes, variants, allocs, epoll, reuseport)" >&2; exit 2 ;;
  esac
done
busy=$(python3 - "$OUT/throughput.json" <<'PY' 2>/dev/null || true
import json, sys
runs = json.load(open(sys.argv[1]))["runs"]
noisy = [r for r in runs if r.get("busy")]
print(f"{len(noisy)} of {len(runs)} comparison runs ended with another process busy on the CPU"
      + (f" (e.g. {', '.join(noisy[0]['busy'][:3])})" if noisy else ""))
PY
)
section=$(python3 report.py "$OUT" --conditions "$conditions${busy:+; $busy}.")
echo "$section"
if [ "$RECORD" = 1 ]; then
  echo "$section" >> "$ROOT/bench/RESULTS.md"
  echo "bench: appended to bench/RESULTS.md (raw JSON in $OUT)" >&2
fi
