#!/usr/bin/env bash
# What the HTTP hardening costs: `hello` throughput of the same release build with
#   plain     defaults (access log off, no health paths, no metrics; limits always on)
#   hardened  the default hardened setup: [limits] spelled out, health paths, metrics
#   logged    hardened + the access log to a file (informative)
# and, with BASE=<commit>, the build of that commit (before the hardening) for the
# whole cost including the limits scanner. wrk -t2 -c64 against 2 workers each, all
# servers started once, in rounds whose order alternates. The machine is shared and
# noisy, so besides the median req/s the script reports the workers' CPU time per
# request (utime + stime from /proc, over each run), which other tenants disturb far
# less than throughput. Results are appended to bench/RESULTS.md.
#
#   bench/hardening.sh                      # ROUNDS=9 DURATION=5 by default
#   BASE=b2dd473 bench/hardening.sh         # also measure the build of commit b2dd473
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d /tmp/forkd-hardening.XXXXXX)
ROUNDS=${ROUNDS:-9}
DURATION=${DURATION:-5}
. bench/common.sh
PIDS=()
trap kill_started EXIT

command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q
FORKD=$ROOT/target/release/forkd

if [ -n "${BASE:-}" ]; then
  # Built once per commit and kept, as a release build takes minutes on 2 cores.
  BASE_DIR=/tmp/forkd-bench-base-$(git rev-parse --short "$BASE")
  if [ ! -x "$BASE_DIR/target/release/forkd" ]; then
    rm -rf "$BASE_DIR" && mkdir -p "$BASE_DIR/src"
    git archive "$BASE" | tar -x -C "$BASE_DIR/src"
    (cd "$BASE_DIR/src" && CARGO_TARGET_DIR="$BASE_DIR/target" cargo build --release -q)
  fi
  BASE_FORKD=$BASE_DIR/target/release/forkd
fi

cat > "$WORK/hardened.toml" <<EOF
app = "hello"
workers = 2
bind = ["127.0.0.1:0"]
[limits]
request_line = 8190
request_fields = 100
request_field_size = 8190
max_body = "10MiB"
header_read_timeout = 10
max_connections = 1000
[health]
live_path = "/health/live"
ready_path = "/health/ready"
[metrics]
bind = "127.0.0.1:0"
EOF
sed 's|^\[limits\]|[log]\naccess_log = "'"$WORK"'/access.log"\n[limits]|' "$WORK/hardened.toml" > "$WORK/logged.toml"

declare -A PORT MASTER
# CPU clock ticks (user + system) used so far by a master's workers.
worker_ticks() {
  local total=0 pid
  for pid in $(pgrep -P "$1"); do
    # Fields 14 and 15 (utime, stime), counted after the command name, which has spaces.
    total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}')))
  done
  echo "$total"
}
start() { # name binary args...
  local name=$1 bin=$2; shift 2
  "$bin" "$@" 2>"$WORK/$name.log" &
  PIDS+=($!)
  MASTER[$name]=$!
  for _ in $(seq 1 200); do
    grep -q "all workers ready" "$WORK/$name.log" 2>/dev/null && break
    sleep 0.05
  done
  PORT[$name]=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$WORK/$name.log" | head -1 | sed 's/.*://')
  [ -n "${PORT[$name]}" ] || { echo "$name did not start:"; cat "$WORK/$name.log"; exit 1; }
}
start plain "$FORKD" -b 127.0.0.1:0 -w 2 hello
start hardened "$FORKD" -c "$WORK/hardened.toml"
start logged "$FORKD" -c "$WORK/logged.toml"
NAMES=(plain hardened logged)
if [ -n "${BASE:-}" ]; then start base "$BASE_FORKD" -b 127.0.0.1:0 -w 2 hello; NAMES=(base "${NAMES[@]}"); fi

TICK_US=$((1000000 / $(getconf CLK_TCK)))
declare -A RUNS CPU
for round in $(seq 1 "$ROUNDS"); do
  order=("${NAMES[@]}")
  if [ $((round % 2)) -eq 0 ]; then order=($(printf '%s\n' "${NAMES[@]}" | tac)); fi
  for name in "${order[@]}"; do
    : > "$WORK/access.log"   # keep the disk small; the writer appends
    before=$(worker_ticks "${MASTER[$name]}")
    wrk -t2 -c64 -d"${DURATION}s" "http://127.0.0.1:${PORT[$name]}/" > "$WORK/wrk.out"
    after=$(worker_ticks "${MASTER[$name]}")
    rps=$(awk '/^Requests\/sec/ {print int($2)}' "$WORK/wrk.out")
    requests=$(awk '/ requests in / {print $1}' "$WORK/wrk.out")
    cpu=$(awk -v t=$((after - before)) -v r="$requests" -v us="$TICK_US" 'BEGIN {printf "%.2f", t * us / r}')
    RUNS[$name]="${RUNS[$name]:-} $rps"
    CPU[$name]="${CPU[$name]:-} $cpu"
    echo "round $round $name $rps req/s, $cpu us CPU/request"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
declare -A MED MEDCPU
for name in "${NAMES[@]}"; do
  MED[$name]=$(echo "${RUNS[$name]}" | median)
  MEDCPU[$name]=$(echo "${CPU[$name]}" | median)
done
pct() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.1f%%", (b - a) * 100 / a}'; }

COMMIT=$(git rev-parse --short HEAD)
{
  echo
  echo "## HTTP hardening cost — $(date -u +%Y-%m-%d), commit $COMMIT"
  echo
  echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end (shared with other engineers' builds). wrk -t2 -c64 -d${DURATION}s keep-alive, ${ROUNDS} rounds in alternating order, \`hello\`, 2 workers, release build. CPU/request: the workers' utime + stime over a run divided by its requests."
  echo
  echo "| setup | median req/s | vs plain | median worker CPU µs/request | vs plain | req/s per round |"
  echo "| --- | --- | --- | --- | --- | --- |"
  for name in "${NAMES[@]}"; do
    case $name in
      base) what="build of $BASE (before the hardening), defaults" ;;
      plain) what="this build, defaults (access log off, no health, no metrics)" ;;
      hardened) what="this build, limits + health paths + metrics, access log off" ;;
      logged) what="this build, hardened + access log to a file" ;;
    esac
    echo "| $what | ${MED[$name]} | $(pct "${MED[plain]}" "${MED[$name]}") | ${MEDCPU[$name]} | $(pct "${MEDCPU[plain]}" "${MEDCPU[$name]}") |${RUNS[$name]} |"
  done
} | tee -a bench/RESULTS.md
