#!/usr/bin/env bash
# HTTPS: forkd (`tls://`, rustls + ring) against nginx (OpenSSL) and Gunicorn +
# UvicornWorker (`--certfile`/`--keyfile`, Python's ssl module: OpenSSL), 2 workers each,
# the same ECDSA P-256 certificate, the same hello answer, on this machine, in one run.
#
#   bench/tls.sh    # installs wrk and nginx (apt) if missing, gunicorn, uvicorn, uvloop
#                   # and httptools (pip) into a virtualenv in the run's temp dir; needs openssl
#
# For each server, ROUNDS rounds alternating the servers, wrk -t2 for DURATION seconds:
#   keep-alive   -c64, one TLS handshake per connection: req/s and p99
#   handshakes   -c64 with `Connection: close`: every request a new TCP connection and a
#                full TLS handshake (wrk does not resume sessions): new connections/s, p99
# wrk speaks HTTP/1.1 over TLS 1.3 here.
#   worker RSS   during each keep-alive run, twice (after 1/3 and 2/3 of it), VmRSS from
#                /proc of every child of the server's master (its workers), averaged per
#                worker; the larger sample of a run, the median of the rounds
#   rotation     then, one server at a time: bench/loadcount.py --tls with 64 keep-alive
#                connections, and every ROTATE_EVERY seconds the server's certificate and
#                key files are replaced (rename) by the next of ROTATIONS new certificates
#                (new key, distinct serial) and the server is told to reload (forkd and
#                Gunicorn: HUP to the master; nginx: `nginx -s reload`); every failed
#                request is counted by kind (connect, reset, eof, status, timeout). At
#                the end the serial the server presents (openssl s_client) is compared
#                with the last certificate's; it is also read just before each next
#                rotation, which counts the reloads that took effect in time.
# Results are appended to bench/RESULTS.md with the date, the machine's load and the commit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d /tmp/forkd-bench-tls.XXXXXX)
PIDS=()
. bench/common.sh
cleanup() {
  # nginx's own stop first: it waits for its workers (a SIGKILLed master can leave one).
  [ -f "$WORK/nginx/nginx.pid" ] && nginx -q -s stop -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>/dev/null
  # forkd's and Gunicorn's masters stop their workers on TERM.
  for f in "$WORK/forkd.pid" "$WORK/gunicorn.pid"; do
    [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null
  done
  sleep 1
  kill_started
  rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then apt-get update -qq && apt-get install -y -qq wrk nginx >/dev/null; fi
need openssl || { echo "bench/tls.sh needs the openssl command" >&2; exit 1; }
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q --disable-pip-version-check gunicorn uvicorn uvloop httptools
VPY=$WORK/venv/bin/python
cargo build --release -q
FORKD=$ROOT/target/release/forkd
DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-3}
ROTATIONS=${ROTATIONS:-10}
ROTATE_EVERY=${ROTATE_EVERY:-1.5}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# cert NAME SERIAL: a self-signed ECDSA P-256 certificate and its key in $WORK/NAME.{cert,key}.pem
cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=localhost -set_serial "$2" -keyout "$WORK/$1.key.pem" -out "$WORK/$1.cert.pem" 2>/dev/null
  chmod 600 "$WORK/$1.key.pem"
}
cert start 0x1000
for i in $(seq 1 "$ROTATIONS"); do cert "rot$i" "$(printf '0x%x' $((0x1000 + i)))"; done
# Each server reads its own copy of the files, so that rotating one leaves the others alone.
for server in forkd nginx gunicorn; do
  mkdir -p "$WORK/live/$server"
  cp -p "$WORK/start.cert.pem" "$WORK/live/$server/cert.pem"
  cp -p "$WORK/start.key.pem" "$WORK/live/$server/key.pem"
done

wait_https() {
  for _ in $(seq 1 200); do curl -kfs "https://127.0.0.1:$1/" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "server on $1 did not start" >&2; return 1
}

SERVERS=(forkd nginx gunicorn)
declare -A PORT=([forkd]=18821 [gunicorn]=18822 [nginx]=18823)
for server in "${SERVERS[@]}"; do
  if curl -ks -o /dev/null "https://127.0.0.1:${PORT[$server]}/"; then
    echo "port ${PORT[$server]} is in use: stop what listens there or edit PORT in $0" >&2
    exit 1
  fi
done

FORKD_TLS_CERTFILE=$WORK/live/forkd/cert.pem FORKD_TLS_KEYFILE=$WORK/live/forkd/key.pem \
  "$FORKD" -b "tls://127.0.0.1:${PORT[forkd]}" -w 2 -p "$WORK/forkd.pid" hello 2>"$WORK/forkd.log" &
PIDS+=($!)
wait_https "${PORT[forkd]}"

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
    listen 127.0.0.1:${PORT[nginx]} ssl http2;
    ssl_certificate $WORK/live/nginx/cert.pem;
    ssl_certificate_key $WORK/live/nginx/key.pem;
    location / { default_type text/plain; return 200 "Hello, world!"; }
  }
}
CONF
"$(command -v nginx)" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -e "$WORK/nginx/error.log"
PIDS+=("$(cat "$WORK/nginx/nginx.pid")")
wait_https "${PORT[nginx]}"

# Gunicorn + UvicornWorker as bench/exec.sh runs it (uvloop and httptools are picked when
# installed), its TLS from --certfile/--keyfile; no access log (its default), no control
# socket (a shared path in $HOME).
"$VPY" -m gunicorn --chdir "$ROOT/bench" -k uvicorn.workers.UvicornWorker -w 2 \
  -b "127.0.0.1:${PORT[gunicorn]}" --certfile "$WORK/live/gunicorn/cert.pem" \
  --keyfile "$WORK/live/gunicorn/key.pem" --no-control-socket -p "$WORK/gunicorn.pid" \
  asgi_hello:app 2>"$WORK/gunicorn.log" &
PIDS+=($!)
wait_https "${PORT[gunicorn]}"

master() { # server -> the master's pid
  case $1 in
    forkd) cat "$WORK/forkd.pid" ;;
    nginx) cat "$WORK/nginx/nginx.pid" ;;
    gunicorn) cat "$WORK/gunicorn.pid" ;;
  esac
}

# Per-worker average VmRSS in KiB of the master's children (its workers) right now.
worker_rss() {
  local total=0 n=0 kib child
  for child in $(pgrep -P "$(master "$1")" || true); do
    kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$child/status" 2>/dev/null || true)
    [ -n "$kib" ] || continue
    total=$((total + kib)); n=$((n + 1))
  done
  [ "$n" -gt 0 ] && echo $((total / n)) || echo 0
}

# wrk output -> "req_per_s p99_ms errors"
summary() {
  awk '
    /Requests\/sec:/ { rps = $2 }
    /Socket errors:/ { gsub(",", ""); fail += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { fail += $5 }
    $1 == "99%" { p = $2; if (p ~ /us$/) { sub("us","",p); p = p/1000 } else if (p ~ /ms$/) { sub("ms","",p) } else if (p ~ /s$/) { sub("s","",p); p = p*1000 } p99 = p }
    END { printf "%.0f %.2f %d\n", rps, p99, fail+0 }' "$1"
}

declare -A RUNS RSS
third=$(awk -v d="$DURATION" 'BEGIN { print d / 3 }')
for round in $(seq 1 "$ROUNDS"); do
  for server in "${SERVERS[@]}"; do
    port=${PORT[$server]}
    echo "== round $round: $server" >&2
    for mode in keepalive handshakes; do
      out=$WORK/$server-$mode-$round.wrk
      if [ "$mode" = keepalive ]; then
        wrk -t2 -c64 -d"${DURATION}s" --latency "https://127.0.0.1:$port/" >"$out" 2>&1 &
        wrk_pid=$!
        sleep "$third"; a=$(worker_rss "$server")
        sleep "$third"; b=$(worker_rss "$server")
        wait "$wrk_pid"
        RSS[$server]+="$((a > b ? a : b)) "
      else
        wrk -t2 -c64 -d"${DURATION}s" --latency -H 'Connection: close' "https://127.0.0.1:$port/" >"$out" 2>&1
      fi
      RUNS[$server-$mode]+="$(summary "$out");"
    done
  done
done

# ---- certificate rotation under keep-alive load, one server at a time
reload() {
  case $1 in
    forkd | gunicorn) kill -HUP "$(master "$1")" ;;
    nginx) nginx -q -s reload -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>>"$WORK/nginx/signal.log" ;;
  esac
}
serial() { # port -> the serial of the certificate served there
  echo | openssl s_client -connect "127.0.0.1:$1" 2>/dev/null | openssl x509 -noout -serial | cut -d= -f2
}
declare -A ROTATED SERVED IN_TIME
want_serial=$(openssl x509 -noout -serial -in "$WORK/rot$ROTATIONS.cert.pem" | cut -d= -f2)
for server in "${SERVERS[@]}"; do
  echo "== $ROTATIONS certificate rotations: $server" >&2
  out=$WORK/$server-rotation.json
  "$VPY" bench/loadcount.py --tls --port "${PORT[$server]}" --mode keepalive --connections 64 >"$out" &
  load_pid=$!
  PIDS+=("$load_pid")
  sleep "$ROTATE_EVERY"
  for i in $(seq 1 "$ROTATIONS"); do
    # rename(2) each file into place: a reader sees the old file or the new, never half.
    cp -p "$WORK/rot$i.cert.pem" "$WORK/live/$server/cert.pem.new"
    cp -p "$WORK/rot$i.key.pem" "$WORK/live/$server/key.pem.new"
    mv "$WORK/live/$server/cert.pem.new" "$WORK/live/$server/cert.pem"
    mv "$WORK/live/$server/key.pem.new" "$WORK/live/$server/key.pem"
    reload "$server"
    sleep "$ROTATE_EVERY"
    # Did the reload take effect before the next one? (one more connection, not counted)
    [ "$(serial "${PORT[$server]}")" = "$(openssl x509 -noout -serial -in "$WORK/rot$i.cert.pem" | cut -d= -f2)" ] &&
      IN_TIME[$server]=$((${IN_TIME[$server]:-0} + 1))
  done
  kill -TERM "$load_pid"
  wait "$load_pid" || true
  kept=(); for p in "${PIDS[@]}"; do [ "$p" = "$load_pid" ] || kept+=("$p"); done; PIDS=("${kept[@]}")
  ROTATED[$server]=$("$VPY" -c '
import json, sys
r = json.load(open(sys.argv[1]))
failed, total = r["failed"], r["ok"] + r["failed"]
kinds = ", ".join("%d %s" % (n, k) for k, n in r["kinds"].items() if n)
print("%d of %d" % (failed, total) + (" (%s)" % kinds if kinds else ""))
' "$out")
  got=$(serial "${PORT[$server]}")
  SERVED[$server]=$([ "$got" = "$want_serial" ] && echo "yes ($got)" || echo "NO ($got, want $want_serial)")
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
# "kib kib kib " -> "median MiB (min–max)"
rss_median() {
  echo "$1" | tr ' ' '\n' | awk 'NF' | sort -n | tr '\n' ' ' | awk '{
    n = NF; printf "%.1f (%.1f–%.1f)", $(int((n + 1) / 2)) / 1024, $1 / 1024, $n / 1024 }'
}

declare -A NAME=([forkd]="forkd" [nginx]="nginx" [gunicorn]="Gunicorn + UvicornWorker")
commit=$(git rev-parse --short HEAD)
described=$(git describe --always --dirty)   # before RESULTS.md is written to
versions=$("$VPY" -c 'import importlib.metadata as m; print(", ".join(f"{p} {m.version(p)}" for p in ("gunicorn", "uvicorn", "uvloop", "httptools")))')
{
  echo
  echo "## HTTPS: forkd vs nginx vs Gunicorn + UvicornWorker ($(date -u +%Y-%m-%d), commit $commit)"
  echo
  echo "\`bench/tls.sh\`: 2 workers each, \`hello\` / \`return 200\` / raw ASGI hello, one ECDSA"
  echo "P-256 certificate, wrk -t2 -c64 for ${DURATION}s, $ROUNDS rounds alternating servers (median, range);"
  echo "\"handshakes\" sends \`Connection: close\`, so each request is a new connection with a"
  echo "full TLS 1.3 handshake. Worker RSS: VmRSS per worker (average of the master's children),"
  echo "sampled twice in each keep-alive run, the larger sample; median of the rounds (range)."
  echo "Rotation: bench/loadcount.py --tls, 64 keep-alive connections, $ROTATIONS new certificates"
  echo "(new key and serial) renamed over the files every ${ROTATE_EVERY}s, each followed by the reload"
  echo "(HUP; \`nginx -s reload\`); failed = connect, reset, eof before a full response, non-2xx, timeout."
  echo "$(nproc) CPUs shared with other work, load average before: $LOAD_BEFORE, at the end: $(cut -d' ' -f1-3 /proc/loadavg);"
  echo "forkd $described, $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(openssl version | cut -d' ' -f1-2),"
  echo "$("$VPY" -V), $versions."
  echo
  echo "| server | mode | req/s | p99 ms | errors |"
  echo "| --- | --- | --- | --- | --- |"
  for server in "${SERVERS[@]}"; do
    for mode in keepalive handshakes; do
      echo "| ${NAME[$server]} | $mode | $(medians "${RUNS[$server-$mode]}") |"
    done
  done
  echo
  echo "| server | worker RSS under keep-alive load, MiB | failed requests during $ROTATIONS rotations | new certificate served within ${ROTATE_EVERY}s | serves the last certificate |"
  echo "| --- | --- | --- | --- | --- |"
  for server in "${SERVERS[@]}"; do
    echo "| ${NAME[$server]} | $(rss_median "${RSS[$server]}") | ${ROTATED[$server]} | ${IN_TIME[$server]:-0} of $ROTATIONS | ${SERVED[$server]} |"
  done
} | tee -a "${RESULTS:-bench/RESULTS.md}"
