#!/usr/bin/env bash
# Exec workers: forkd + uvicorn workers vs Gunicorn + UvicornWorker, the same raw ASGI
# app (bench/asgi_hello.py), on this machine, in one run, 2 workers each.
#
#   bench/exec.sh     # installs wrk (apt) and gunicorn, uvicorn, uvloop, httptools (pip) if missing
#
# Three servers, all run as `python -m ...` with the same interpreter:
#   forkd + uvicorn          forkd -c forkd.toml with [exec] command = uvicorn ... --fd 3
#   forkd + uvicorn, nodelay the same, through bench/uvicorn_nodelay.py (TCP_NODELAY on
#                            the listener, which uvicorn --fd does not set)
#   Gunicorn + UvicornWorker gunicorn -k uvicorn.workers.UvicornWorker
# Access logs off and a 2 s keep-alive timeout (Gunicorn's default) for all.
#
# Measured: req/s and p99 with wrk -t2 -c64 keep-alive, ROUNDS rounds alternating between
# the servers (median, min-max); master and worker memory (RSS, PSS) from /proc after
# those rounds; then, for each server, HUPS rolling restarts (HUP, wait until every worker
# is new and polls the socket, 0.5 s, next HUP) twice: once under wrk -c64 (failures =
# socket errors + non-2xx), once under bench/loadcount.py with 32 keep-alive connections
# and 32 connection-per-request loops at the same time, which counts each failed request
# by kind. Appends a section to bench/RESULTS.md with date, machine, commit, versions and
# the load on the machine.
#
# The machine may be shared: unless QUIET_WAIT=0, the run first waits (up to QUIET_WAIT
# seconds, default 900) until no rustc process runs and the 1-minute load average is
# below 2, and records the load either way.
# ROUNDS, DURATION (seconds per wrk round), HUPS and RESULTS (the file to append to) can
# be set in the environment for a shorter trial.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
HUPS=${HUPS:-10}
WORKERS=2
QUIET_WAIT=${QUIET_WAIT:-900}
RESULTS=${RESULTS:-$ROOT/bench/RESULTS.md} # a trial run can write elsewhere
WORK=$(mktemp -d /tmp/forkd-bench-exec.XXXXXX)

# Every process this run starts is recorded here and killed by its pid at exit.
MASTERS=()
CLIENTS=()
cleanup() {
  for pid in "${CLIENTS[@]:-}"; do [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${MASTERS[@]:-}"; do
    [ -n "$pid" ] || continue
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    for child in $(pgrep -P "$pid" || true); do kill -9 "$child" 2>/dev/null || true; done
    kill -9 "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

# ---- what the run needs
need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need curl; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk curl >/dev/null
fi
if ! python3 -c 'import gunicorn, uvicorn, uvloop, httptools' 2>/dev/null; then
  # Debian's python3 refuses pip into the system environment (PEP 668) unless told.
  python3 -m pip install -q --disable-pip-version-check gunicorn uvicorn uvloop httptools ||
    python3 -m pip install -q --disable-pip-version-check --break-system-packages \
      gunicorn uvicorn uvloop httptools
fi
PY=$(python3 -c 'import sys; print(sys.executable)')
cargo build --release -q
FORKD=$ROOT/target/release/forkd

# ---- a quiet machine, if it comes
rustc_count() { { pgrep -x rustc || true; } | wc -l; }  # observed only, never signalled
if [ "$QUIET_WAIT" -gt 0 ]; then
  waited=0
  busy() { [ "$(rustc_count)" -gt 0 ] || awk '{ exit !($1 >= 2.0) }' /proc/loadavg; }
  while busy && [ "$waited" -lt "$QUIET_WAIT" ]; do
    echo "waiting for a quieter machine: $(rustc_count) rustc running, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    sleep 10
    waited=$((waited + 10))
  done
fi
# What is measured is the committed code unless the run says otherwise.
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git status --porcelain -- src Cargo.toml Cargo.lock bench ':!bench/RESULTS.md' 2>/dev/null |
  grep -q . && echo ", with uncommitted changes to src or bench" || true)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
RUSTC_BEFORE=$(rustc_count)

# ---- the servers
SERVERS=(uvicorn nodelay gunicorn)
declare -A PORT=([uvicorn]=18811 [nodelay]=18812 [gunicorn]=18813)
declare -A MASTER
for server in "${SERVERS[@]}"; do
  if curl -s -o /dev/null "http://127.0.0.1:${PORT[$server]}/"; then
    echo "port ${PORT[$server]} is in use: stop what listens there or edit PORT in $0" >&2
    exit 1
  fi
done

wait_http() { # port
  for _ in $(seq 1 300); do
    curl -fs -o /dev/null "http://127.0.0.1:$1/" && return 0
    sleep 0.1
  done
  echo "nothing answers on port $1; see the logs in $WORK" >&2
  return 1
}

forkd_config() { # name port program...
  local name=$1 port=$2 list
  shift 2
  list=$(printf '"%s", ' "$@")
  cat >"$WORK/$name.toml" <<TOML
bind = ["127.0.0.1:$port"]
workers = $WORKERS
chdir = "$ROOT/bench"
pidfile = "$WORK/$name.pid"

[exec]
command = [${list%, }]
TOML
}

UVICORN_ARGS=(asgi_hello:app --fd 3 --no-access-log --timeout-keep-alive 2)
forkd_config uvicorn "${PORT[uvicorn]}" "$PY" -m uvicorn "${UVICORN_ARGS[@]}"
forkd_config nodelay "${PORT[nodelay]}" "$PY" "$ROOT/bench/uvicorn_nodelay.py" "${UVICORN_ARGS[@]}"
for server in uvicorn nodelay; do
  "$FORKD" -c "$WORK/$server.toml" 2>"$WORK/$server.log" &
  MASTER[$server]=$!
  MASTERS+=($!)
done
"$PY" -m gunicorn --chdir "$ROOT/bench" -k uvicorn.workers.UvicornWorker -w "$WORKERS" \
  -b "127.0.0.1:${PORT[gunicorn]}" -p "$WORK/gunicorn.pid" asgi_hello:app 2>"$WORK/gunicorn.log" &
MASTER[gunicorn]=$!
MASTERS+=($!)
for server in "${SERVERS[@]}"; do wait_http "${PORT[$server]}"; done

# wrk output -> "requests failed p99_ms req_per_s"
wrk_summary() {
  awk '
    / requests in / { req = $1 }
    /Socket errors:/ { gsub(",", ""); fail += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { fail += $5 }
    /Requests\/sec:/ { rps = $2 }
    $1 == "99%" {
      p = $2
      if (p ~ /us$/) { sub("us", "", p); p = p / 1000 }
      else if (p ~ /ms$/) { sub("ms", "", p) }
      else if (p ~ /s$/) { sub("s", "", p); p = p * 1000 }
      p99 = p
    }
    END { printf "%d %d %.2f %.0f\n", req, fail + 0, p99, rps }' "$1"
}

# ---- throughput, alternating
for round in $(seq 1 "$ROUNDS"); do
  for server in "${SERVERS[@]}"; do
    echo "== round $round: $server" >&2
    wrk -t2 -c64 -d"${DURATION}s" --latency "http://127.0.0.1:${PORT[$server]}/" >"$WORK/steady-$server-$round.wrk"
    wrk_summary "$WORK/steady-$server-$round.wrk" >"$WORK/steady-$server-$round.txt"
  done
done

# ---- memory, warm
for server in "${SERVERS[@]}"; do
  "$PY" "$ROOT/bench/procwatch.py" memory "${MASTER[$server]}" >"$WORK/memory-$server.json"
done

# ---- rolling restarts under load
hups() { # server phase
  "$PY" "$ROOT/bench/procwatch.py" hups "${MASTER[$1]}" "${PORT[$1]}" "$HUPS" >"$WORK/hups-$1-$2.json"
}
for server in "${SERVERS[@]}"; do
  port=${PORT[$server]}
  echo "== $HUPS HUPs under wrk: $server" >&2
  wrk -t2 -c64 -d3600s --latency "http://127.0.0.1:$port/" >"$WORK/hup-$server.wrk" &
  wrk_pid=$!
  CLIENTS+=("$wrk_pid")
  sleep 1
  hups "$server" wrk
  sleep 1
  kill -INT "$wrk_pid" # wrk prints its summary on SIGINT
  wait "$wrk_pid" || true
  wrk_summary "$WORK/hup-$server.wrk" >"$WORK/hup-$server.txt"

  echo "== $HUPS HUPs under the counting client: $server" >&2
  "$PY" "$ROOT/bench/loadcount.py" --port "$port" --mode keepalive --connections 32 >"$WORK/count-$server-keepalive.json" &
  keep_pid=$!
  "$PY" "$ROOT/bench/loadcount.py" --port "$port" --mode close --connections 32 >"$WORK/count-$server-close.json" &
  close_pid=$!
  CLIENTS+=("$keep_pid" "$close_pid")
  sleep 1
  hups "$server" count
  sleep 1
  kill -TERM "$keep_pid" "$close_pid"
  wait "$keep_pid" "$close_pid"
  CLIENTS=() # all waited for: their pids may be reused from now on
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
RUSTC_AFTER=$(rustc_count)

# ---- the report
export WORK ROUNDS DURATION HUPS WORKERS LOAD_BEFORE LOAD_AFTER RUSTC_BEFORE RUSTC_AFTER
export COMMIT DIRTY
"$PY" - <<'PY' | tee -a "$RESULTS"
import json, os, platform, statistics, subprocess, time
from importlib.metadata import version

env = os.environ
work = env["WORK"]
rounds, hups = int(env["ROUNDS"]), int(env["HUPS"])
names = {
    "uvicorn": "forkd + uvicorn",
    "nodelay": "forkd + uvicorn, TCP_NODELAY on the listener",
    "gunicorn": "Gunicorn + UvicornWorker",
}

def wrk(path):
    req, failed, p99, rps = open(path).read().split()
    return int(req), int(failed), float(p99), float(rps)

def mib(kib):
    return f"{kib / 1024:.1f}"

def spread(values, fmt):
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"

def kinds(count):
    parts = [f"{n} {k}" for k, n in count["kinds"].items() if n]
    return f"{count['failed']} of {count['ok'] + count['failed']}" + (f" ({', '.join(parts)})" if parts else "")

cores = os.cpu_count()
mem_gib = round(int(open("/proc/meminfo").read().split()[1]) / 1048576)
py = platform.python_version()
versions = ", ".join(f"{p} {version(p)}" for p in ("uvicorn", "gunicorn", "uvloop", "httptools"))
print()
print(f"## Exec workers: forkd + uvicorn vs Gunicorn + UvicornWorker — {time.strftime('%Y-%m-%d', time.gmtime())}, commit {env['COMMIT']}{env['DIRTY']}")
print()
print(f"Machine: {cores} cores, {mem_gib} GiB, {platform.release()}; Python {py}, {versions}. "
      f"Recorded by `bench/exec.sh`: the same raw ASGI app (`bench/asgi_hello.py`), {env['WORKERS']} workers each, "
      "access logs off, keep-alive timeout 2 s, every server started as `python -m ...` with the same interpreter. "
      f"Shared machine: load average {env['LOAD_BEFORE']} before the run and {env['LOAD_AFTER']} after it; "
      f"rustc processes running: {env['RUSTC_BEFORE']} at the start, {env['RUSTC_AFTER']} at the end.")
print()
print(f"Throughput: wrk -t2 -c64 -d{env['DURATION']}s (keep-alive), {rounds} rounds alternating between the servers; "
      "median (min-max). Memory: after those rounds, from /proc (PSS counts a page shared by n processes as 1/n "
      "in each: Gunicorn's workers are forks of its Python master).")
print()
print("| server | req/s | p99 ms | errors in these rounds | master RSS MiB | RSS per worker MiB | PSS master + workers MiB |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for server, name in names.items():
    runs = [wrk(f"{work}/steady-{server}-{r}.txt") for r in range(1, rounds + 1)]
    memory = json.load(open(f"{work}/memory-{server}.json"))
    per_worker = " / ".join(mib(w["rss_kib"]) for w in memory["workers"])
    pss = memory["master"]["pss_kib"] + sum(w["pss_kib"] for w in memory["workers"])
    print(f"| {name} | {spread([r[3] for r in runs], lambda v: f'{v:.0f}')} | "
          f"{spread([r[2] for r in runs], lambda v: f'{v:.2f}')} | {sum(r[1] for r in runs)} | "
          f"{mib(memory['master']['rss_kib'])} | {per_worker} | {mib(pss)} |")
print()
print(f"{hups} HUPs under load, twice per server: each HUP waits until every worker is new and polls the socket "
      "(seen in /proc), then 0.5 s. First under wrk -t2 -c64 (failed = socket errors + non-2xx, as wrk counts them), "
      "then under `bench/loadcount.py`, 32 keep-alive connections and 32 connection-per-request loops at once, "
      "which counts every failed request by kind (eof: closed before a complete response; reset; connect: refused).")
print()
print("| server | HUP to all workers new and polling, s (median, max) | wrk -c64: failed of requests | keep-alive client: failed of requests | connection per request: failed of requests |")
print("| --- | --- | --- | --- | --- |")
for server, name in names.items():
    seconds = json.load(open(f"{work}/hups-{server}-wrk.json"))["seconds"] + json.load(open(f"{work}/hups-{server}-count.json"))["seconds"]
    req, failed, _, _ = wrk(f"{work}/hup-{server}.txt")
    keep = json.load(open(f"{work}/count-{server}-keepalive.json"))
    close = json.load(open(f"{work}/count-{server}-close.json"))
    print(f"| {name} | {statistics.median(seconds):.2f}, {max(seconds):.2f} | {failed} of {req} | {kinds(keep)} | {kinds(close)} |")
PY
echo "logs and raw output: $WORK" >&2
