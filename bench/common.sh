# Sourced by the bench shell scripts: what they share.

# Kills (SIGKILL) every process whose pid is in the PIDS array, with its children (the
# workers of each master). Only processes the run started are ever in PIDS.
kill_started() {
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] || continue
    pkill -9 -P "$p" 2>/dev/null || true
    kill -9 "$p" 2>/dev/null || true
  done
}
