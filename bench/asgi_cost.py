#!/usr/bin/env python3
"""A quick, one-server look at what an ASGI worker costs: CPU per request and memory
under load, for comparing builds of forkd's Python package with each other (and with
Gunicorn + UvicornWorker or Granian) without the full bench/asgi.sh.

WORKERS workers (default 1), `wrk -t1 -cCONNS -dSECONDS` after a 1 s warm-up: req/s,
CPU µs per request (the workers' utime+stime from /proc/PID/stat over the run / wrk's
requests: steadier than req/s on a busy machine), and per worker (the mean over the
workers) threads and /proc/PID/smaps_rollup (Rss, Pss, Anonymous) sampled at the
middle of the run.

    bench/asgi_cost.py --python VENV/bin/python SERVER... [--app hello|fastapi]
                       [--conns 64] [--seconds 5] [--rounds 3] [--workers 1] [--wrk-threads 1]

SERVER is `forkd` (the forkd package the venv has installed), `forkd=DIR` (the `forkd`
package in DIR, put first on PYTHONPATH: a build under test), `gunicorn-uvicorn` or
`granian`; each may be given a label as `LABEL@SERVER`. Servers alternate within each
round; the median of the rounds is printed."""

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
WORKERS = 1
APPS = {"hello": ("asgi_hello:app", "/"), "fastapi": ("asgi_fastapi:app", "/items/42?q=hello")}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def argv_env(server, python, app, port, work):
    venv_bin = os.path.dirname(python)
    bind = f"127.0.0.1:{port}"
    env = dict(os.environ)
    if server == "forkd" or server.startswith("forkd="):
        if server.startswith("forkd="):
            env["PYTHONPATH"] = server.split("=", 1)[1]
        return [python, "-m", "forkd", "-b", bind, "-w", str(WORKERS), "--access-log", "off",
                "-p", f"{work}/forkd-{port}.pid", app], env
    if server == "gunicorn-uvicorn":
        return [f"{venv_bin}/gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", str(WORKERS),
                "-b", bind, "--no-control-socket", app], env
    if server == "granian":
        return [f"{venv_bin}/granian", "--interface", "asgi", "--workers", str(WORKERS),
                "--host", "127.0.0.1", "--port", str(port), app], env
    raise SystemExit(f"unknown server {server!r}")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rollup(pid):
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            m = re.match(r"(\w+):\s+(\d+) kB", line)
            if m:
                out[m.group(1)] = int(m.group(2))
    with open(f"/proc/{pid}/status") as f:
        out["Threads"] = int(re.search(r"^Threads:\s+(\d+)", f.read(), re.M).group(1))
    return out


def wait_ready(proc, port, path, deadline_s=60):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready")


def workers_of(proc):
    """The processes serving: the WORKERS descendants with the most CPU time after the
    warm-up (Granian's and uvicorn's supervisors are descendants too)."""
    procs = sorted(descendants(proc.pid), key=ticks, reverse=True)[:WORKERS]
    return procs or [proc.pid]


def mean_rollup(pids):
    rows = [rollup(pid) for pid in pids]
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def one(server, args, work):
    port = free_port()
    module, path = APPS[args.app]
    argv, env = argv_env(server, args.python, module, port, work)
    log = open(os.path.join(work, f"{port}.log"), "wb")
    proc = subprocess.Popen(argv, cwd=BENCH, env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=log, start_new_session=True)
    try:
        wait_ready(proc, port, path)
        url = f"http://127.0.0.1:{port}{path}"
        subprocess.run(["wrk", f"-t{args.wrk_threads}", f"-c{args.conns}", "-d1s", url], capture_output=True)
        workers = workers_of(proc)
        before = sum(ticks(w) for w in workers)
        sample = {}
        timer = threading.Timer(args.seconds / 2, lambda: sample.update(mean_rollup(workers)))
        timer.start()
        out = subprocess.run(["wrk", f"-t{args.wrk_threads}", f"-c{args.conns}", f"-d{args.seconds:g}s", url],
                             capture_output=True, text=True).stdout
        timer.join()
        used = sum(ticks(w) for w in workers) - before
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        cpu_us = used * 1e6 / os.sysconf("SC_CLK_TCK") / max(requests, 1)
        return {"rps": rps, "cpu_us": cpu_us, **sample}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what we started
        except ProcessLookupError:
            pass
        proc.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("servers", nargs="+")
    parser.add_argument("--python", required=True)
    parser.add_argument("--app", default="hello", choices=sorted(APPS))
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--wrk-threads", type=int, default=1)
    args = parser.parse_args()
    global WORKERS
    WORKERS = args.workers
    work = tempfile.mkdtemp(prefix="forkd-asgi-cost-")
    named = [(s.split("@", 1) if "@" in s else (s, s)) for s in args.servers]
    results = {label: [] for label, _ in named}
    for _ in range(args.rounds):
        for label, server in named:
            results[label].append(one(server, args, work))
    load = open("/proc/loadavg").read().split()[:3]
    print(f"app {args.app}, wrk -t{args.wrk_threads} -c{args.conns} -d{args.seconds:g}s, {args.workers} worker(s), "
          f"median of {args.rounds}, load {' '.join(load)}")
    print(f"{'server':<24} {'req/s':>8} {'(range)':>15} {'CPU us/req':>10} {'Rss KiB':>8} "
          f"{'Pss KiB':>8} {'Anon KiB':>8} {'threads':>7}")
    for label, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows if k in r)
               for k in ("rps", "cpu_us", "Rss", "Pss", "Anonymous", "Threads")}
        spread = f"({min(r['rps'] for r in rows):.0f}-{max(r['rps'] for r in rows):.0f})"
        print(f"{label:<24} {med['rps']:>8.0f} {spread:>15} {med['cpu_us']:>10.1f} {med['Rss']:>8.0f} "
              f"{med['Pss']:>8.0f} {med['Anonymous']:>8.0f} {med['Threads']:>7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
