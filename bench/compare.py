#!/usr/bin/env python3
"""Throughput, latency, errors and memory of `hello` servers side by side: forkd, nginx,
Gunicorn + UvicornWorker (raw ASGI, uvloop + httptools) and a plain multi-threaded
hyper server, each with 2 workers (2 runtime threads for hyper), all started at once
and measured in alternation with the same wrk settings, several rounds each.

    bench/compare.py [--servers forkd,nginx,gunicorn,hyper] [--rounds 3] [--duration 10]
                     [--conns 64,256] [--wrk-threads 1] [--json FILE]

Writes the per-run numbers as JSON (for bench/report.py) and prints a summary. Normally
run by bench/run.sh, which installs and builds everything first."""

import argparse
import json
import sys
import time

import benchlib as b

STARTERS = {
    "forkd": lambda wd: b.start_forkd(wd, workers=2, threads=1),
    "forkd-t2": lambda wd: b.start_forkd(wd, workers=2, threads=2, name="forkd-t2"),
    "forkd-w1t2": lambda wd: b.start_forkd(wd, workers=1, threads=2, name="forkd-w1t2"),
    "nginx": lambda wd: b.start_nginx(wd, workers=2),
    "gunicorn": lambda wd: b.start_gunicorn(wd, workers=2),
    "hyper": lambda wd: b.start_hyper(wd, threads=2),
    # One process (one runtime thread) each: what one core of each server does, without
    # how its processes share the two cores with wrk.
    "forkd-w1": lambda wd: b.start_forkd(wd, workers=1, threads=1, name="forkd-w1"),
    "nginx-w1": lambda wd: b.start_nginx(wd, workers=1),
    "hyper-t1": lambda wd: b.start_hyper(wd, threads=1),
}


def variant_starter(spec):
    """`NAME=BINARY` (a forkd build to compare, 2 workers, threads = 1)."""
    name, binary = spec.split("=", 1)
    return name, lambda wd: b.start_forkd(wd, workers=2, threads=1, binary=binary, name=name)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="forkd,nginx,gunicorn,hyper")
    ap.add_argument("--binary", action="append", default=[],
                    help="NAME=PATH: another forkd build to include (e.g. another allocator)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server")
    ap.add_argument("--conns", default="64,256")
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    starters = dict(STARTERS)
    for spec in args.binary:
        name, starter = variant_starter(spec)
        starters[name] = starter
    names = [n for n in args.servers.split(",") if n] + [s.split("=", 1)[0] for s in args.binary]
    for n in names:
        if n not in starters:
            sys.exit(f"compare.py: unknown server {n!r}; known: {', '.join(starters)}")
    conns = [int(c) for c in args.conns.split(",")]

    wd = b.workdir()
    servers = {}
    runs = []
    try:
        for n in names:
            b.log(f"starting {n}")
            servers[n] = starters[n](wd)
        idle = {}
        for n in names:
            # Memory at rest (after one request each), before any load.
            idle[n] = servers[n].memory()
            b.wrk(servers[n].port, 64, args.warmup, threads=args.wrk_threads)
        for rnd in range(1, args.rounds + 1):
            for c in conns:
                # Alternate the order every round so no server always follows the same one.
                order = names if rnd % 2 else list(reversed(names))
                for n in order:
                    s = servers[n]
                    pids = s.pids()
                    cpu0 = b.cpu_seconds(pids)
                    r = b.wrk(s.port, c, args.duration, threads=args.wrk_threads)
                    # CPU the server spent per request: far less sensitive than req/s to
                    # other processes competing for the 2 cores.
                    cpu_us = (b.cpu_seconds(pids) - cpu0) / max(1, r.requests) * 1e6
                    mem = s.memory()
                    ours = {p for x in servers.values() for p in [x.master_pid, *x.workers()]}
                    busy = b.busy_processes(exclude=ours)
                    runs.append({"server": n, "round": rnd, "conns": c, "rps": r.rps,
                                 "requests": r.requests, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
                                 "errors": r.errors, "cpu_us_per_request": cpu_us,
                                 "master_kib": mem["master"],
                                 "workers_kib": mem["workers"], "busy": busy})
                    b.log(f"round {rnd} c{c} {n:>10}: {r.rps:9.0f} req/s  p50 {r.p50_ms:.2f} ms  "
                          f"p99 {r.p99_ms:.2f} ms  errors {r.errors}  cpu {cpu_us:.2f} us/req  busy: {busy}")
                    time.sleep(1)
    finally:
        for s in servers.values():
            s.stop()
    result = {"settings": {"rounds": args.rounds, "duration_s": args.duration, "conns": conns,
                           "wrk_threads": args.wrk_threads, "servers": names},
              "idle_memory_kib": idle, "runs": runs}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    for n in names:
        for c in conns:
            rs = [r for r in runs if r["server"] == n and r["conns"] == c]
            print(f"{n:>10} c{c}: median {b.median([r['rps'] for r in rs]):.0f} req/s, "
                  f"best {max(r['rps'] for r in rs):.0f}, "
                  f"p99 {b.median([r['p99_ms'] for r in rs]):.2f} ms, "
                  f"errors {sum(r['errors'] for r in rs)}, "
                  f"server CPU {b.median([r['cpu_us_per_request'] for r in rs]):.2f} us/request, "
                  f"largest worker RSS {max_worker_kib(rs) / 1024:.1f} MiB")


def max_worker_kib(rs):
    """The largest worker RSS seen after these runs (plain hyper: its one process)."""
    workers = [w[0] for r in rs for w in r["workers_kib"]]
    return max(workers) if workers else max(r["master_kib"][0] for r in rs)


if __name__ == "__main__":
    main()
