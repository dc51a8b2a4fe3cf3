#!/usr/bin/env python3
"""The measuring half of bench/asgi.sh (which builds the virtualenv and calls this with
its python): forkd's Python package against the Python ASGI servers, 2 workers each,
on two apps, then failed requests during HUPs under keep-alive load. Appends a dated
section to bench/RESULTS.md (or $RESULTS).

Every server is started here in its own session and stopped here (TERM to its master,
then SIGKILL to its process group); only loopback addresses are used."""

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
from benchlib import CLOCK_TICKS, children, parse_wrk, wrk_version  # noqa: E402

WORK = os.environ["WORK"]
VENV = os.environ["VENV"]
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = int(os.environ.get("DURATION", "5"))
HUPS = int(os.environ.get("HUPS", "10"))
HUP_EVERY = float(os.environ.get("HUP_EVERY", "2"))
HUP_APP = os.environ.get("HUP_APP", "fastapi")
CONNS = [int(c) for c in os.environ.get("CONNS", "64 256").split()]
WORKERS = 2

APPS = {  # name -> (MODULE:ATTR, the path wrk asks for)
    "hello": ("asgi_hello:app", "/"),
    "fastapi": ("asgi_fastapi:app", "/items/42?q=hello"),
}
SERVERS = ["forkd", "gunicorn-uvicorn", "uvicorn", "granian", "gunicorn-asgi"]
NAME = {
    "forkd": "forkd (Python package)",
    "gunicorn-uvicorn": "Gunicorn + UvicornWorker",
    "uvicorn": "uvicorn --workers 2",
    "granian": "Granian --interface asgi",
    "gunicorn-asgi": "Gunicorn -k asgi",
}
RELOAD = {  # how each is told to reload: all take SIGHUP to the master
    "forkd": "HUP to the master",
    "gunicorn-uvicorn": "HUP to the master",
    "uvicorn": "HUP to the supervisor (restarts all processes)",
    "granian": "HUP to the main process (reloads the workers)",
    "gunicorn-asgi": "HUP to the master",
}
BASE_PORT = 18900


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def gunicorn_has_asgi():
    done = subprocess.run([f"{VENV}/bin/python", "-c",
                           "from gunicorn.workers import SUPPORTED_WORKERS as s; print('asgi' in s)"],
                          capture_output=True, text=True)
    return done.stdout.strip() == "True"


def argv_for(server, app, port):
    bind = f"127.0.0.1:{port}"
    if server == "forkd":
        return [f"{VENV}/bin/forkd", "-b", bind, "-w", str(WORKERS), "--access-log", "off",
                "-p", f"{WORK}/{server}-{port}.pid", app]
    if server == "gunicorn-uvicorn":
        return [f"{VENV}/bin/gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", str(WORKERS),
                "-b", bind, "--no-control-socket", app]
    if server == "gunicorn-asgi":
        return [f"{VENV}/bin/gunicorn", "-k", "asgi", "-w", str(WORKERS), "-b", bind,
                "--no-control-socket", app]
    if server == "uvicorn":
        return [f"{VENV}/bin/uvicorn", app, "--workers", str(WORKERS), "--host", "127.0.0.1",
                "--port", str(port), "--no-access-log"]
    if server == "granian":
        return [f"{VENV}/bin/granian", "--interface", "asgi", "--workers", str(WORKERS),
                "--host", "127.0.0.1", "--port", str(port), app]
    raise ValueError(server)


class Server:
    def __init__(self, server, app_name, port):
        self.server, self.app_name, self.port = server, app_name, port
        module, self.path = APPS[app_name]
        self.logf = open(f"{WORK}/{server}-{app_name}.log", "wb")
        self.proc = subprocess.Popen(argv_for(server, module, port), cwd=BENCH, stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=self.logf, start_new_session=True)

    @property
    def master(self):
        # Every one of these runs its master (supervisor) as the process we started: the
        # `forkd` command runs forkd's master in its own interpreter, uvicorn and Granian
        # supervise from their main process, Gunicorn is its master.
        return self.proc.pid

    def descendants(self):
        out, todo = [], [self.master]
        while todo:
            for child in children(todo.pop()):
                out.append(child)
                todo.append(child)
        return out

    def wait_ready(self, deadline_s=60):
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.server} ({self.app_name}) exited; see {self.logf.name}")
            done = subprocess.run(["curl", "-fs", "-o", "/dev/null", "--max-time", "2",
                                   f"http://127.0.0.1:{self.port}{self.path}"])
            if done.returncode == 0 and len(self.descendants()) >= WORKERS:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.server} ({self.app_name}) not serving on {self.port}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only what we started
        except ProcessLookupError:
            pass
        self.proc.wait()


def ticks(pids):
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[pid] = int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return out


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def measure(srv, conns):
    """One wrk run: (req/s, p99 ms, wrk errors, requests, CPU µs per request,
    per-worker VmRSS KiB under load)."""
    before = ticks(srv.descendants())
    argv = ["wrk", "-t2", f"-c{conns}", f"-d{DURATION}s", "--latency", "--timeout", "5s",
            f"http://127.0.0.1:{srv.port}{srv.path}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples = []  # two samples of {pid: rss}, after 1/3 and 2/3 of the run
    for _ in range(2):
        time.sleep(DURATION / 3)
        samples.append({pid: rss_kib(pid) for pid in srv.descendants()})
    out, _ = proc.communicate(timeout=DURATION + 60)
    after = ticks(srv.descendants())
    result = parse_wrk(out)
    used = {pid: after[pid] - before.get(pid, 0) for pid in after}
    total = sum(used.values())
    # The workers: the descendants that did the work (a helper such as a resource
    # tracker, idle through the run, is not a worker and would dilute the average).
    workers = [pid for pid, t in used.items() if total and t >= 0.05 * total]
    per_sample = []
    for sample in samples:
        values = [sample[p] for p in workers if sample.get(p)]
        if values:
            per_sample.append(sum(values) / len(values))
    cpu_us = total / CLOCK_TICKS * 1e6 / result.requests if result.requests else float("nan")
    return (result.rps, result.p99_ms, result.errors, result.requests, cpu_us,
            max(per_sample) if per_sample else float("nan"), len(workers))


def loadavg():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def throughput(app_name, servers, results, loads):
    running = {}
    try:
        for i, server in enumerate(servers):
            running[server] = Server(server, app_name, BASE_PORT + i)
        for srv in running.values():
            srv.wait_ready()
        for srv in running.values():  # warm-up: first requests import and compile
            subprocess.run(["wrk", "-t2", "-c64", "-d1s", f"http://127.0.0.1:{srv.port}{srv.path}"],
                           capture_output=True)
        for rnd in range(1, ROUNDS + 1):
            loads.append(loadavg())
            for conns in CONNS:
                for server in servers:
                    log(f"== {app_name} round {rnd} -c{conns}: {server}")
                    r = measure(running[server], conns)
                    results.setdefault((app_name, server, conns), []).append(r)
                    log(f"   {r[0]:.0f} req/s, p99 {r[1]:.2f} ms, {r[4]:.0f} µs CPU/req, "
                        f"RSS {r[5] / 1024:.1f} MiB, {r[6]} workers, {r[2]} errors")
    finally:
        for srv in running.values():
            srv.stop()


def hups(app_name, servers):
    out = {}
    for i, server in enumerate(servers):
        srv = Server(server, app_name, BASE_PORT + 20 + i)
        try:
            srv.wait_ready()
            first = set(srv.descendants())
            log(f"== {HUPS} HUPs under 64 keep-alive connections: {server} ({app_name})")
            load = subprocess.Popen([sys.executable, f"{BENCH}/loadcount.py", "--port", str(srv.port),
                                     "--mode", "keepalive", "--connections", "64", "--path", srv.path],
                                    stdout=subprocess.PIPE, text=True)
            time.sleep(HUP_EVERY)
            for _ in range(HUPS):
                os.kill(srv.master, signal.SIGHUP)
                time.sleep(HUP_EVERY)
            time.sleep(HUP_EVERY)
            load.send_signal(signal.SIGTERM)
            report = json.loads(load.communicate(timeout=30)[0])
            # Workers now: the descendants that answer (a process that is not a worker,
            # such as a resource tracker, is counted too: noted in the table's header).
            last = set(srv.descendants())
            report["processes_at_end"] = len(last)
            report["processes_at_start"] = len(first)
            report["new_processes"] = len(last - first)
            report["alive"] = srv.proc.poll() is None
            out[server] = report
            log(f"   {report['failed']} failed of {report['ok'] + report['failed']}: {report['kinds']}")
        finally:
            srv.stop()
    return out


def app_floors():
    """Each app's own CPU µs per request with no server (bench/asgi_floor.py), {} if it fails."""
    specs = {name: f"{spec}@{path}" for name, (spec, path) in APPS.items()}
    run = subprocess.run([f"{VENV}/bin/python", f"{BENCH}/asgi_floor.py", "--json", *specs.values()],
                         capture_output=True, text=True, cwd=BENCH)
    if run.returncode != 0:
        log(f"asgi_floor.py failed: {run.stderr.strip()}")
        return {}
    by_spec = {r["app"]: r["us_per_request"] for r in map(json.loads, run.stdout.splitlines())}
    return {name: by_spec[spec] for name, spec in specs.items() if spec in by_spec}


def med_range(values, fmt):
    values = sorted(values)
    return f"{fmt(statistics.median(values))} ({fmt(values[0])}–{fmt(values[-1])})"


def main():
    servers = os.environ.get("SERVERS", " ".join(SERVERS)).split()
    notes = []
    if not gunicorn_has_asgi():
        servers.remove("gunicorn-asgi")
        notes.append("The installed Gunicorn has no `-k asgi` worker: skipped.")
    load_before = loadavg()
    floors = app_floors()
    results, loads = {}, []
    for app_name in APPS:
        throughput(app_name, servers, results, loads)
    hup = hups(HUP_APP, servers)
    load_after = loadavg()

    def version(pkg):
        return subprocess.run([f"{VENV}/bin/python", "-c",
                               f"import importlib.metadata as m; print(m.version('{pkg}'))"],
                              capture_output=True, text=True).stdout.strip() or "not installed"

    pkgs = ["gunicorn", "uvicorn", "granian", "fastapi", "starlette", "pydantic", "uvloop", "httptools"]
    versions = ", ".join(f"{p} {version(p)}" for p in pkgs)
    pyver = subprocess.run([f"{VENV}/bin/python", "-V"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    forkd_version = version("forkd")

    lines = []
    w = lines.append
    w("")
    w(f"## Python ASGI: forkd's Python package vs Gunicorn, uvicorn and Granian "
      f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit}{' + uncommitted changes' if dirty else ''})")
    w("")
    w(f"`bench/asgi.sh`, one run: {WORKERS} workers each, access logs off, uvloop and httptools installed "
      f"(each server's default picks them where it can), forkd from `pip install .` (maturin, release) "
      f"into a fresh virtualenv. Apps: `bench/asgi_hello.py` (raw ASGI, `GET /`) and "
      f"`bench/asgi_fastapi.py` (FastAPI, `GET /items/42?q=hello`, JSON). wrk -t2 for {DURATION}s at each "
      f"of -c{' and -c'.join(map(str, CONNS))}, {ROUNDS} rounds, servers alternating within a round "
      f"(one 1 s warm-up each first): req/s median (range), p99 median; CPU per request = the utime+stime "
      f"(/proc/PID/stat) its worker processes used over the run / wrk's requests, median; worker RSS = "
      f"VmRSS averaged over the processes that did ≥5% of the work, sampled after 1/3 and 2/3 of each run, "
      f"the larger, median of the rounds. HUPs: `bench/loadcount.py`, 64 keep-alive connections on the "
      f"{HUP_APP} app, {HUPS} HUPs {HUP_EVERY:g} s apart; failed = connect error, reset, EOF before a full "
      f"response, non-2xx, timeout.")
    w("")
    w(f"{os.cpu_count()} CPUs shared with other engineers' work; wrk (or the Python load client) runs on "
      f"the same 2 CPUs. Load average before: {load_before}; at each round's start: "
      f"{'; '.join(loads)}; at the end: {load_after}. forkd {forkd_version} ({commit}), {pyver}, "
      f"{versions}, {wrk_version()}.")
    for note in notes:
        w("")
        w(note)
    for app_name in APPS:
        w("")
        w(f"| {app_name} | conns | req/s | p99 ms | CPU µs/req | worker RSS MiB | wrk errors |")
        w("| --- | --- | --- | --- | --- | --- | --- |")
        for conns in CONNS:
            for server in servers:
                rs = results[(app_name, server, conns)]
                w(f"| {NAME[server]} | {conns} | {med_range([r[0] for r in rs], lambda v: f'{v:.0f}')} | "
                  f"{statistics.median(r[1] for r in rs):.1f} | {statistics.median(r[4] for r in rs):.0f} | "
                  f"{med_range([r[5] / 1024 for r in rs], lambda v: f'{v:.1f}')} | {sum(r[2] for r in rs)} |")
    def rps(app_name, server, conns):
        return statistics.median(r[0] for r in results[(app_name, server, conns)])

    if floors:
        w("")
        w("The apps' own CPU per request with no server (`bench/asgi_floor.py`: called in-process, "
          "one Task per request, uvloop; best of 3 × 20000): "
          + ", ".join(f"{a} {floors[a]:.1f} µs" for a in APPS if a in floors)
          + ". Each server's CPU per request above that is its own work (median, -c"
          + "/-c".join(map(str, CONNS)) + "): "
          + "; ".join(
              f"{a}: " + ", ".join(
                  f"{NAME[s]} " + "/".join(
                      f"{statistics.median(r[4] for r in results[(a, s, c)]) - floors[a]:.0f}"
                      for c in CONNS)
                  for s in servers)
              for a in APPS if a in floors)
          + " µs.")
    if "forkd" in servers:
        ratios = []
        for app_name in APPS:
            for conns in CONNS:
                peers = ", ".join(f"{NAME[s]} {rps(app_name, 'forkd', conns) / rps(app_name, s, conns):.2f}×"
                                  for s in servers if s != "forkd")
                ratios.append(f"{app_name} -c{conns}: {peers}")
        w("")
        w("Ratios of median req/s, forkd ÷ peer: " + "; ".join(ratios) + ".")
    w("")
    w(f"| server ({HUP_APP} app) | reload signal | failed during {HUPS} HUPs | processes at start → end (new) | master alive |")
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
    with open(f"{WORK}/raw.json", "w") as f:
        json.dump({"results": {"|".join(map(str, k)): v for k, v in results.items()}, "hups": hup}, f)
    print(text)


if __name__ == "__main__":
    main()
