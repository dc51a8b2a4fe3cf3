#!/usr/bin/env bash
# HTTPS: forkd (`tls://`, rustls + ring) against nginx (OpenSSL), 2 workers each, the
# same ECDSA P-256 certificate, on this machine, in one run.
#
#   bench/tls.sh            # installs wrk and nginx (apt) if missing; needs openssl
#
# For each server, ROUNDS rounds alternating the servers, wrk -t2 for DURATION seconds:
#   keep-alive   -c64, one TLS handshake per connection: req/s and p99
#   handshakes   -c64 with `Connection: close`: every request a new TCP connection and a
#                full TLS handshake (wrk does not resume sessions): new connections/s, p99
# wrk speaks HTTP/1.1 over TLS 1.3 here. Results are appended to bench/RESULTS.md with
# the date, the machine's load and the commit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d /tmp/forkd-bench-tls.XXXXXX)
PIDS=()
. bench/common.sh
cleanup() {
  # nginx's own stop first: it waits for its workers (a SIGKILLed master can leave one).
  [ -f "$WORK/nginx/nginx.pid" ] && nginx -q -s stop -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>/dev/null
  sleep 0.5
  kill_started
  rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then apt-get update -qq && apt-get install -y -qq wrk nginx >/dev/null; fi
need openssl || { echo "bench/tls.sh needs the openssl command" >&2; exit 1; }
cargo build --release -q
FORKD=$ROOT/target/release/forkd
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj /CN=localhost -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
chmod 600 "$WORK/key.pem"

wait_https() {
  for _ in $(seq 1 200); do curl -kfs "https://127.0.0.1:$1/" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "server on $1 did not start" >&2; return 1
}

FORKD_TLS_CERTFILE=$WORK/cert.pem FORKD_TLS_KEYFILE=$WORK/key.pem \
  "$FORKD" -b tls://127.0.0.1:18821 -w 2 hello 2>"$WORK/forkd.log" &
PIDS+=($!)
wait_https 18821

mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache shared:SSL:10m;
  server {
    listen 127.0.0.1:18823 ssl http2;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    location / { default_type text/plain; return 200 "Hello, world!"; }
  }
}
CONF
"$(command -v nginx)" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -e "$WORK/nginx/error.log"
PIDS+=("$(cat "$WORK/nginx/nginx.pid")")
wait_https 18823

# wrk output -> "req_per_s p99_ms errors"
summary() {
  awk '
    /Requests\/sec:/ { rps = $2 }
    /Socket errors:/ { gsub(",", ""); fail += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { fail += $5 }
    $1 == "99%" { p = $2; if (p ~ /us$/) { sub("us","",p); p = p/1000 } else if (p ~ /ms$/) { sub("ms","",p) } else if (p ~ /s$/) { sub("s","",p); p = p*1000 } p99 = p }
    END { printf "%.0f %.2f %d\n", rps, p99, fail+0 }' "$1"
}

declare -A RUNS
for round in $(seq 1 "$ROUNDS"); do
  for server in forkd nginx; do
    port=$([ "$server" = forkd ] && echo 18821 || echo 18823)
    for mode in keepalive handshakes; do
      out=$WORK/$server-$mode-$round.wrk
      if [ "$mode" = keepalive ]; then
        wrk -t2 -c64 -d"${DURATION}s" --latency "https://127.0.0.1:$port/" >"$out" 2>&1
      else
        wrk -t2 -c64 -d"${DURATION}s" --latency -H 'Connection: close' "https://127.0.0.1:$port/" >"$out" 2>&1
      fi
      RUNS[$server-$mode]+="$(summary "$out");"
    done
  done
done

# "rps p99 err;rps p99 err;..." -> "median_rps (min–max) | median_p99 | total_errors"
# (plain awk and sort: Debian's awk is mawk, without asort)
medians() {
  local rows; rows=$(echo "$1" | tr ';' '\n' | awk 'NF')
  local rps p99 errors
  rps=$(echo "$rows" | awk '{ print $1 }' | sort -n | tr '\n' ' ')
  p99=$(echo "$rows" | awk '{ print $2 }' | sort -n | tr '\n' ' ')
  errors=$(echo "$rows" | awk '{ e += $3 } END { print e + 0 }')
  echo "$rps" | awk -v p="$p99" -v e="$errors" '{
    n = NF; split(p, q, " ")
    printf "%d (%d–%d) | %.2f | %d\n", $(int((n + 1) / 2)), $1, $n, q[int((n + 1) / 2)], e
  }'
}

commit=$(git rev-parse --short HEAD)
described=$(git describe --always --dirty)   # before RESULTS.md is written to
{
  echo
  echo "## HTTPS: forkd vs nginx ($(date -u +%Y-%m-%d), commit $commit)"
  echo
  echo "\`bench/tls.sh\`: 2 workers each, \`hello\` / \`return 200\`, one ECDSA P-256"
  echo "certificate, wrk -t2 -c64 for ${DURATION}s, $ROUNDS rounds alternating servers (median, range);"
  echo "\"handshakes\" sends \`Connection: close\`, so each request is a new connection with a"
  echo "full TLS 1.3 handshake. $(nproc) CPUs, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg);"
  echo "forkd $described, $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(openssl version | cut -d' ' -f1-2)."
  echo
  echo "| server | mode | req/s | p99 ms | errors |"
  echo "| --- | --- | --- | --- | --- |"
  for server in forkd nginx; do
    for mode in keepalive handshakes; do
      echo "| $server | $mode | $(medians "${RUNS[$server-$mode]}") |"
    done
  done
} | tee -a bench/RESULTS.md
