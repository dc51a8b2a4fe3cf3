#!/usr/bin/env bash
# Hand-offs and system calls per request in one forkd Python worker, per thread (the
# asyncio loop, "forkd: worker", and forkd's server thread, "forkd-server"): perf stat
# counts context switches, futex/epoll/read/write/writev/recvfrom calls and task-clock
# while `wrk -t1 -cCONNS -dSECONDS` runs against a 1-worker server (after a 1 s
# warm-up), divided by wrk's requests. Counts, unlike req/s, hold on a busy machine:
# the wake-ups between the two threads are the read(2)s on the loop thread (one per
# eventfd wake-up) and the write(2)s on either.
#
#   bench/asgi_wakeups.sh VENV/bin/python PKGDIR [APP] [CONNS] [SECONDS]
#
# PKGDIR holds a `forkd` package with its extension module built in (as for
# bench/instructions.py --asgi: a copy of python/py/forkd with the release
# `_native*.so` as forkd/_native.cpython-311-x86_64-linux-gnu.so), put first on
# PYTHONPATH. APP is asgi_hello:app (default, GET /) or asgi_fastapi:app
# (GET /items/42?q=hello). Needs perf (linux-perf), wrk and curl; run as root (or
# with perf_event_paranoid allowing tracepoints).
set -euo pipefail

python=$1
pkg=$(cd "$2" && pwd)
app=${3:-asgi_hello:app}
conns=${4:-64}
seconds=${5:-5}
bench=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/forkd-wakeups.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
path=/
[ "$app" = "asgi_fastapi:app" ] && path="/items/42?q=hello"

cd "$bench"
PYTHONPATH="$pkg:$bench" PYTHONHASHSEED=0 "$python" -m forkd -b "127.0.0.1:$port" -w 1 \
  --access-log off "$app" >"$work/forkd.log" 2>&1 &
master=$!
trap 'kill -TERM $master 2>/dev/null || true; wait $master 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$port$path" && break
  sleep 0.2
done
worker=$(pgrep -P "$master" | head -1)
threads=$(ls "/proc/$worker/task" | paste -sd,)
wrk -t1 -c"$conns" -d1 "http://127.0.0.1:$port$path" >/dev/null
perf stat -x, --per-thread -o "$work/perf.csv" \
  -e task-clock,context-switches,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_wait \
  -e syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_read,syscalls:sys_enter_write \
  -e syscalls:sys_enter_writev,syscalls:sys_enter_recvfrom -t "$threads" &
perf=$!
sleep 0.3
out=$(wrk -t1 -c"$conns" -d"$seconds" "http://127.0.0.1:$port$path")
kill -INT $perf
wait $perf || true
requests=$(echo "$out" | awk '/requests in/ {print $1}')
echo "$app, wrk -t1 -c$conns -d${seconds}s: $requests requests ($(echo "$out" | awk '/Requests\/sec/ {print $2}') req/s)"
echo "per request (task-clock in µs; it also counts the 0.3 s before wrk starts):"
awk -F, -v r="$requests" '/^[^#]/ && NF > 3 {
    thread = ($1 ~ /^forkd-server/) ? "server" : "loop"
    value = ($4 == "task-clock") ? $2 * 1000 / r : $2 / r
    printf "  %-6s %-34s %8.3f\n", thread, $4, value
  }' "$work/perf.csv" | sort
rm -rf "$work"
