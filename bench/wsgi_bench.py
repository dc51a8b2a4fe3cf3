#!/usr/bin/env python3
"""The measuring half of bench/wsgi.sh (which builds the virtualenv and calls this with
its python): forkd's Python package serving WSGI apps against Gunicorn sync, Gunicorn
gthread and Granian's WSGI, 2 workers each, then failed requests during HUPs under
keep-alive load. Appends a dated section to bench/RESULTS.md (or $RESULTS).

The servers are started, measured and stopped by bench/asgi_bench.py's machinery
(`Server`, `measure`, `throughput`, `hups`), given this bench's apps and command lines."""

import os
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import asgi_bench as machinery  # noqa: E402
from benchlib import wrk_version  # noqa: E402

THREADS = int(os.environ.get("THREADS", "4"))
WORKERS = machinery.WORKERS
VENV, WORK, ROOT = machinery.VENV, machinery.WORK, machinery.ROOT

APPS = {
    "hello": ("wsgi_hello:app", "/"),
    "django": ("wsgi_django:app", "/items/42?q=hello"),
}
SERVERS = ["forkd", "gunicorn-gthread", "gunicorn-sync", "granian"]
NAME = {
    "forkd": f"forkd (Python package, --threads {THREADS})",
    "gunicorn-gthread": f"Gunicorn gthread --threads {THREADS}",
    "gunicorn-sync": "Gunicorn sync",
    "granian": f"Granian --interface wsgi --blocking-threads {THREADS}",
}
RELOAD = {
    "forkd": "HUP to the master",
    "gunicorn-gthread": "HUP to the master",
    "gunicorn-sync": "HUP to the master",
    "granian": "HUP to the main process (reloads the workers)",
}


def argv_for(server, app, port):
    bind = f"127.0.0.1:{port}"
    if server == "forkd":
        return [f"{VENV}/bin/forkd", "-b", bind, "-w", str(WORKERS), "--threads", str(THREADS),
                "--access-log", "off", "-p", f"{WORK}/{server}-{port}.pid", app]
    if server == "gunicorn-gthread":
        return [f"{VENV}/bin/gunicorn", "-k", "gthread", "--threads", str(THREADS), "-w", str(WORKERS),
                "-b", bind, "--no-control-socket", app]
    if server == "gunicorn-sync":
        return [f"{VENV}/bin/gunicorn", "-k", "sync", "-w", str(WORKERS), "-b", bind,
                "--no-control-socket", app]
    if server == "granian":
        return [f"{VENV}/bin/granian", "--interface", "wsgi", "--workers", str(WORKERS),
                "--blocking-threads", str(THREADS), "--host", "127.0.0.1", "--port", str(port), app]
    raise ValueError(server)


def gunicorn_flags_ok():
    """Older Gunicorns have no --no-control-socket: drop it then."""
    done = subprocess.run([f"{VENV}/bin/gunicorn", "--help"], capture_output=True, text=True)
    return "--no-control-socket" in done.stdout


def main():
    if not gunicorn_flags_ok():
        base = argv_for

        def without_control_socket(server, app, port):
            return [a for a in base(server, app, port) if a != "--no-control-socket"]

        globals()["argv_for"] = without_control_socket
    machinery.APPS = APPS
    machinery.argv_for = lambda server, app, port: argv_for(server, app, port)
    machinery.HUP_APP = "hello"
    servers = os.environ.get("SERVERS", " ".join(SERVERS)).split()
    load_before = machinery.loadavg()
    results, loads = {}, []
    for app_name in APPS:
        machinery.throughput(app_name, servers, results, loads)
    hup = machinery.hups("hello", servers)
    load_after = machinery.loadavg()

    def version(pkg):
        return subprocess.run([f"{VENV}/bin/python", "-c",
                               f"import importlib.metadata as m; print(m.version('{pkg}'))"],
                              capture_output=True, text=True).stdout.strip() or "not installed"

    versions = ", ".join(f"{p} {version(p)}" for p in ["gunicorn", "granian", "django"])
    pyver = subprocess.run([f"{VENV}/bin/python", "-V"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    conns_list = machinery.CONNS
    lines = []
    w = lines.append
    w("")
    w(f"## Python WSGI: forkd's Python package vs Gunicorn sync, Gunicorn gthread and Granian "
      f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit}"
      f"{' + uncommitted changes' if dirty else ''})")
    w("")
    w(f"`bench/wsgi.sh`, one run: {WORKERS} workers each, {THREADS} threads per worker where the server "
      f"has a pool (Gunicorn sync has none), access logs off, forkd from `pip install .` (maturin, "
      f"release) into a fresh virtualenv. Apps: `bench/wsgi_hello.py` (raw WSGI, `GET /`) and "
      f"`bench/wsgi_django.py` (Django, one JSON view, `GET /items/42?q=hello`). wrk -t2 for "
      f"{machinery.DURATION}s at each of -c{' and -c'.join(map(str, conns_list))}, {machinery.ROUNDS} "
      f"rounds, servers alternating within a round: req/s median (range), p99 median, CPU per request "
      f"(the workers' utime+stime over the run / requests), worker RSS under load. HUPs: "
      f"`bench/loadcount.py`, 64 keep-alive connections on the hello app, {machinery.HUPS} HUPs "
      f"{machinery.HUP_EVERY:g} s apart.")
    w("")
    w(f"A noisy machine: {os.cpu_count()} CPUs shared with other engineers' builds and tests, wrk "
      f"and the load client on the same CPUs; compare the servers within this run only. Load average "
      f"before: {load_before}; at each round's start: {'; '.join(loads)}; at the end: {load_after}. "
      f"{pyver}, {versions}, {wrk_version()}.")
    for app_name in APPS:
        w("")
        w(f"| {app_name} | conns | req/s | p99 ms | CPU µs/req | worker RSS MiB | wrk errors |")
        w("| --- | --- | --- | --- | --- | --- | --- |")
        for conns in conns_list:
            for server in servers:
                rs = results[(app_name, server, conns)]
                w(f"| {NAME[server]} | {conns} | "
                  f"{machinery.med_range([r[0] for r in rs], lambda v: f'{v:.0f}')} | "
                  f"{statistics.median(r[1] for r in rs):.1f} | {statistics.median(r[4] for r in rs):.0f} | "
                  f"{machinery.med_range([r[5] / 1024 for r in rs], lambda v: f'{v:.1f}')} | "
                  f"{sum(r[2] for r in rs)} |")

    def rps(app_name, server, conns):
        return statistics.median(r[0] for r in results[(app_name, server, conns)])

    if "forkd" in servers:
        ratios = []
        for app_name in APPS:
            for conns in conns_list:
                peers = ", ".join(f"{NAME[s].split(' (')[0]} {rps(app_name, 'forkd', conns) / rps(app_name, s, conns):.2f}×"
                                  for s in servers if s != "forkd")
                ratios.append(f"{app_name} -c{conns}: {peers}")
        w("")
        w("Ratios of median req/s, forkd ÷ peer: " + "; ".join(ratios) + ".")
    w("")
    w(f"| server (hello app) | reload signal | failed during {machinery.HUPS} HUPs | "
      f"processes at start → end (new) | master alive |")
    w("| --- | --- | --- | --- | --- |")
    for server in servers:
        r = hup[server]
        kinds = ", ".join(f"{n} {k}" for k, n in r["kinds"].items() if n)
        w(f"| {NAME[server]} | {RELOAD[server]} | {r['failed']} of {r['ok'] + r['failed']}"
          f"{f' ({kinds})' if kinds else ''} | {r['processes_at_start']} → {r['processes_at_end']} "
          f"({r['new_processes']}) | {'yes' if r['alive'] else 'NO'} |")
    text = "\n".join(lines) + "\n"
    with open(os.environ.get("RESULTS", f"{BENCH}/RESULTS.md"), "a") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
