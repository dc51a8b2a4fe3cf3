#!/usr/bin/env bash
# Failed requests during reloads and upgrades: forkd vs Gunicorn + UvicornWorker vs nginx,
# on this machine, in one run, with the same wrk settings (64 keep-alive connections).
#
#   bench/reload.sh            # installs wrk, nginx (apt) and gunicorn/uvicorn (pip) if missing
#
# For each server: steady p99 (no reloads); 20 HUPs under load (failed requests, p99);
# one binary upgrade under load (USR2, plus the old master's retirement where the server
# needs it); time for a full rolling restart of 4 workers (forkd: HUP until all 4 new
# workers serve). Results are appended to bench/RESULTS.md with date, machine and commit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d /tmp/forkd-bench.XXXXXX)
trap 'cleanup' EXIT
PIDS=()
. bench/common.sh
# Kills every process the run started, with its children (workers of each master).
cleanup() {
  kill_started
  # Masters started by an upgrade are found by the run's unique work dir in their args.
  pkill -9 -f "$WORK" 2>/dev/null || true
}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then apt-get update -qq && apt-get install -y -qq wrk nginx >/dev/null; fi
if ! python3 -c 'import gunicorn, uvicorn, uvloop, httptools' 2>/dev/null; then
  pip install -q gunicorn uvicorn uvloop httptools
fi
cargo build --release -q
FORKD=$ROOT/target/release/forkd
DURATION=${DURATION:-12}
HUPS=${HUPS:-20}

# wrk summary -> "requests failed p99_ms"
wrk_summary() {
  awk '
    / requests in / { req=$1 }
    /Socket errors:/ { gsub(",", ""); fail += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { fail += $5 }
    $1 == "99%" { p = $2; if (p ~ /us$/) { sub("us","",p); p = p/1000 } else if (p ~ /ms$/) { sub("ms","",p) } else if (p ~ /s$/) { sub("s","",p); p = p*1000 } p99 = p }
    END { printf "%d %d %.2f\n", req, fail+0, p99 }' "$1"
}

wait_http() { for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$1/" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "server on $1 did not start" >&2; return 1; }

# run_case NAME PORT MASTER_PID_CMD RELOAD_CMD UPGRADE_CMD
declare -A RESULT
measure() { # name port action(function name)
  local name=$1 port=$2 action=$3 out=$WORK/$1-$3.wrk
  wrk -t2 -c64 -d${DURATION}s --latency "http://127.0.0.1:$port/" > "$out" 2>&1 &
  local wrk_pid=$!
  sleep 1
  $action
  wait $wrk_pid || true
  RESULT[$name-$3]=$(wrk_summary "$out")
}
nothing() { :; }

# ---- forkd
start_forkd() {
  "$FORKD" -b 127.0.0.1:18801 -w 2 -p "$WORK/forkd.pid" ${RECYCLE:+--max-requests 1000 --max-requests-jitter 100} hello 2>"$WORK/forkd.log" &
  PIDS+=($!); wait_http 18801
}
forkd_pid() { cat "$WORK/forkd.pid"; }
forkd_hups() { for _ in $(seq 1 "$HUPS"); do kill -HUP "$(forkd_pid)"; sleep 0.4; done; }
forkd_upgrade() { kill -USR2 "$(forkd_pid)"; sleep 3; PIDS+=("$(forkd_pid)"); }  # the old master leaves by itself

# ---- gunicorn + UvicornWorker
start_gunicorn() {
  (cd "$ROOT/bench" && gunicorn -k uvicorn.workers.UvicornWorker -w 2 -b 127.0.0.1:18802 \
     ${RECYCLE:+--max-requests 1000 --max-requests-jitter 100} \
     -p "$WORK/gunicorn.pid" --access-logfile /dev/null asgi_hello:app 2>"$WORK/gunicorn.log") &
  PIDS+=($!); wait_http 18802
}
gunicorn_hups() { for _ in $(seq 1 "$HUPS"); do kill -HUP "$(cat "$WORK/gunicorn.pid")"; sleep 0.4; done; }
gunicorn_upgrade() { # gunicorn's documented procedure: USR2, then WINCH + TERM the old master
  local old; old=$(cat "$WORK/gunicorn.pid"); kill -USR2 "$old"; sleep 2
  PIDS+=("$(cat "$WORK/gunicorn.pid")")
  kill -WINCH "$old"; sleep 1; kill -TERM "$old"; sleep 1
}

# ---- nginx
start_nginx() {
  mkdir -p "$WORK/nginx"
  cat > "$WORK/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:18803;
    location / { default_type text/plain; return 200 "Hello, world!"; }
  }
}
CONF
  # By absolute path: on USR2 nginx re-executes its argv[0] without a PATH search.
  "$(command -v nginx)" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -e "$WORK/nginx/error.log"
  PIDS+=("$(cat "$WORK/nginx/nginx.pid")"); wait_http 18803
}
nginx_hups() { for _ in $(seq 1 "$HUPS"); do kill -HUP "$(cat "$WORK/nginx/nginx.pid")"; sleep 0.4; done; }
nginx_upgrade() { # nginx's documented procedure: USR2, then WINCH + QUIT the old master
  local old; old=$(cat "$WORK/nginx/nginx.pid"); kill -USR2 "$old"; sleep 2
  PIDS+=("$(cat "$WORK/nginx/nginx.pid")")
  kill -WINCH "$old"; sleep 1; kill -QUIT "$old"; sleep 1
}

for server in forkd gunicorn nginx; do
  echo "== $server" >&2
  "start_$server"
  measure "$server" "$( case $server in forkd) echo 18801;; gunicorn) echo 18802;; nginx) echo 18803;; esac )" nothing
  RESULT[$server-steady]=${RESULT[$server-nothing]}
  port=$( case $server in forkd) echo 18801;; gunicorn) echo 18802;; nginx) echo 18803;; esac )
  measure "$server" "$port" "${server}_hups"
  measure "$server" "$port" "${server}_upgrade"
  cleanup; PIDS=(); sleep 1
done

# Throughput and failures while recycling workers every ~1000 requests.
for server in forkd gunicorn; do
  echo "== $server recycling" >&2
  RECYCLE=1 "start_$server"
  port=$( case $server in forkd) echo 18801;; gunicorn) echo 18802;; esac )
  measure "$server" "$port" nothing
  RESULT[$server-recycle]=${RESULT[$server-nothing]}
  cleanup; PIDS=(); sleep 1
done

# Full rolling restart of 4 forkd workers: HUP until 4 new workers serve and the old are gone.
"$FORKD" -b 127.0.0.1:18804 -w 4 -p "$WORK/roll.pid" hello 2>"$WORK/roll.log" & PIDS+=($!); wait_http 18804
ROLL=$(python3 - "$WORK/roll.pid" <<'PY'
import os, signal, sys, time
master = int(open(sys.argv[1]).read())
def workers():
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit(): continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
            if int(stat.rsplit(")", 1)[1].split()[1]) == master and open(f"/proc/{pid}/cmdline","rb").read().startswith(b"forkd: worker"):
                out.append(int(pid))
        except OSError: pass
    return set(out)
before = workers()
t0 = time.monotonic()
os.kill(master, signal.SIGHUP)
while True:
    now = workers()
    if len(now) == 4 and not (now & before): break
    if time.monotonic() - t0 > 10: print("timeout"); sys.exit()
    time.sleep(0.001)
print("%.0f" % ((time.monotonic() - t0) * 1000))
PY
)
cleanup; PIDS=()

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
row() { # name
  read -r sreq sfail sp99 <<<"${RESULT[$1-steady]}"
  read -r hreq hfail hp99 <<<"${RESULT[$1-$1_hups]}"
  read -r ureq ufail up99 <<<"${RESULT[$1-$1_upgrade]}"
  printf "| %s | %s | %s | %s | %s | %s |\n" "$2" "$sp99" "$hfail of $hreq" "$hp99" "$ufail of $ureq" "$up99"
}
{
  echo
  echo "## Reloads and upgrades — $(date -u +%Y-%m-%d), commit $commit"
  echo
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r). wrk -t2 -c64 -d${DURATION}s keep-alive, 2 workers each, hello app; $HUPS HUPs 0.4 s apart."
  echo
  echo "| server | steady p99 ms | failed during $HUPS HUPs | p99 during HUPs ms | failed during upgrade | p99 during upgrade ms |"
  echo "| --- | --- | --- | --- | --- | --- |"
  row forkd "forkd"
  row gunicorn "Gunicorn + UvicornWorker"
  row nginx "nginx"
  echo
  echo "Recycling, \`max_requests = 1000\`, \`max_requests_jitter = 100\` (same wrk settings):"
  echo
  echo "| server | req/s steady | req/s recycling | ratio | failed while recycling | p99 steady ms | p99 recycling ms |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  for s in forkd gunicorn; do
    read -r sreq _ sp99 <<<"${RESULT[$s-steady]}"
    read -r rreq rfail rp99 <<<"${RESULT[$s-recycle]}"
    awk -v n="$s" -v a="$sreq" -v b="$rreq" -v f="$rfail" -v p="$sp99" -v q="$rp99" -v d="$DURATION" \
      'BEGIN { printf "| %s | %.0f | %.0f | %.2f | %d of %d | %s | %s |\n", n, a/d, b/d, b/a, f, b, p, q }'
  done
  echo
  echo "Full rolling restart of 4 forkd workers (HUP until all 4 new workers serve, old gone): ${ROLL} ms."
} | tee -a "$ROOT/bench/RESULTS.md"
