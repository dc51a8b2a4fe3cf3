#!/usr/bin/env python3
"""Worker memory under load: each server (a forkd binary, or `nginx`) with 2 workers gets
`wrk -t1 -c256 -d5s` (256 keep-alive connections open at once), and 4 s into the run
each worker's VmRSS and smaps_rollup Anonymous are read. Memory hardly depends on how
busy the machine is, so this runs fine on a shared one.

    bench/rss_under_load.py OLD_FORKD NEW_FORKD [nginx] [--rounds 3] [--connections 256]"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402


def anonymous_kib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    return 0


def measure(server, connections, duration=5, at=4.0):
    wrk = subprocess.Popen(["wrk", "-t1", f"-c{connections}", f"-d{duration}s",
                            f"http://127.0.0.1:{server.port}/"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(at)
    rows = []
    for pid in b.children(server.master_pid):
        rss, _ = b.memory_kib(pid)
        rows.append((pid, rss, anonymous_kib(pid)))
    wrk.wait()
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("servers", nargs="+", help="forkd binaries, or nginx")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=256)
    args = ap.parse_args()
    wd = b.workdir()
    for spec in args.servers:
        for _ in range(args.rounds):
            if spec == "nginx":
                server = b.start_nginx(wd, workers=2)
            else:
                server = b.start_forkd(wd, workers=2, binary=spec)
            try:
                rows = measure(server, args.connections)
            finally:
                server.stop()
            cells = "  ".join(f"RSS {rss / 1024:.2f} MiB anon {anon / 1024:.2f} MiB"
                              for _, rss, anon in rows)
            print(f"{spec}: {cells}", flush=True)


if __name__ == "__main__":
    main()
