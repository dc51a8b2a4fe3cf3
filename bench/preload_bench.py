#!/usr/bin/env python3
"""The measuring half of bench/preload.sh (run by it, with VENV and WORK set).

For each server, 4 workers serving bench/preload_app.py (FastAPI, about 60 MB of Python
objects made at import), one at a time:

- memory: after start and 400 requests, the workers' summed RSS and PSS
  (/proc/PID/smaps_rollup), and the whole tree's PSS (master, zygote, workers);
- worker start: TTIN to the master, then the time until the new worker's lifespan
  startup has run (the app writes the time to READY_DIR/ready-PID): a fork from the
  zygote (forkd, preload_app), a fork from the master (Gunicorn --preload), or a fork
  and the app's import (forkd without preload); then TTOU; ROUNDS times, the median;
- HUP: VERSION rewritten on disk, HUP to the master under 16 keep-alive connections of
  bench/loadcount.py: the time until the first answer of the new code and until 40 in a
  row are (every worker replaced), and the failed requests.

Appends a dated section to bench/RESULTS.md (or $RESULTS).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (  # noqa: E402
    BENCH,
    children,
    free_port,
    http_get,
    log,
    machine,
    machine_line,
    median,
    memory_kib,
    start,
)

VENV = os.environ["VENV"]
WORK = os.environ["WORK"]
WORKERS = 4
ROUNDS = int(os.environ.get("ROUNDS", "5"))
RESULTS = os.environ.get("RESULTS", os.path.join(BENCH, "RESULTS.md"))


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def app_dir(name):
    d = os.path.join(WORK, name)
    os.makedirs(os.path.join(d, "ready"), exist_ok=True)
    shutil.copy(os.path.join(BENCH, "preload_app.py"), os.path.join(d, "preload_app.py"))
    return d


def set_version(d, version):
    path = os.path.join(d, "preload_app.py")
    with open(path) as f:
        text = f.read()
    text = "\n".join(
        f"VERSION = {version}" if line.startswith("VERSION = ") else line for line in text.split("\n")
    )
    with open(path, "w") as f:
        f.write(text)


def ready_files(d):
    return {int(n.split("-", 1)[1]) for n in os.listdir(os.path.join(d, "ready")) if n.startswith("ready-")}


def ready_time(d, pid):
    with open(os.path.join(d, "ready", f"ready-{pid}")) as f:
        return float(f.read())


class Case:
    def __init__(self, name, kind):
        self.name = name
        self.kind = kind  # forkd-preload | forkd | gunicorn-preload
        self.dir = app_dir(name)
        self.port = free_port()

    def start(self):
        env = dict(os.environ, READY_DIR=os.path.join(self.dir, "ready"), PYTHONDONTWRITEBYTECODE="1")
        if self.kind.startswith("forkd"):
            argv = [f"{VENV}/bin/forkd", "-b", f"127.0.0.1:{self.port}", "-w", str(WORKERS),
                    "--access-log", "off", "--log-level", "info", "preload_app:app"]
            if self.kind == "forkd-preload":
                env["FORKD_PRELOAD_APP"] = "true"
        else:
            argv = [f"{VENV}/bin/gunicorn", "-w", str(WORKERS), "-k", "uvicorn.workers.UvicornWorker",
                    "--preload", "-b", f"127.0.0.1:{self.port}", "--log-level", "warning", "preload_app:app"]
        self.server = start(self.name, argv, self.port, self.dir, env=env, cwd=self.dir)
        self.wait_workers(WORKERS, 60)

    def workers(self):
        pids = children(self.server.master_pid)
        if self.kind.startswith("forkd"):
            return [p for p in pids if cmdline(p).startswith(b"forkd: worker")]
        return pids

    def others(self):
        """The tree's processes besides the workers: the master, a zygote."""
        pids = [self.server.master_pid]
        if self.kind.startswith("forkd"):
            pids += [p for p in children(self.server.master_pid) if cmdline(p).startswith(b"forkd: zygote")]
        return pids

    def wait_workers(self, count, limit):
        end = time.monotonic() + limit
        while time.monotonic() < end:
            live = self.workers()
            if len(live) == count and set(live) <= ready_files(self.dir):
                return live
            time.sleep(0.02)
        raise RuntimeError(f"{self.name}: {count} ready workers not seen within {limit}s")

    def memory(self):
        for _ in range(400):
            http_get(self.port, "/")
        time.sleep(1)
        workers = [memory_kib(p) for p in self.workers()]
        others = [memory_kib(p) for p in self.others()]
        return {
            "workers_rss_mib": sum(r for r, _ in workers) / 1024,
            "workers_pss_mib": sum(p for _, p in workers) / 1024,
            "tree_pss_mib": (sum(p for _, p in workers) + sum(p for _, p in others)) / 1024,
        }

    def start_times(self):
        times = []
        for _ in range(ROUNDS):
            before = set(self.workers())
            seen = ready_files(self.dir)
            t0 = time.time()
            os.kill(self.server.master_pid, signal.SIGTTIN)
            end = time.monotonic() + 60
            new = None
            while time.monotonic() < end and new is None:
                fresh = [p for p in ready_files(self.dir) - seen if p not in before]
                if fresh:
                    new = fresh[0]
                time.sleep(0.001)
            if new is None:
                raise RuntimeError(f"{self.name}: no new worker after TTIN")
            times.append((ready_time(self.dir, new) - t0) * 1000)
            os.kill(self.server.master_pid, signal.SIGTTOU)
            end = time.monotonic() + 30
            while time.monotonic() < end and len(self.workers()) != WORKERS:
                time.sleep(0.02)
            time.sleep(1)
        return times

    def hup(self):
        set_version(self.dir, 2)
        load = subprocess.Popen(
            [sys.executable, os.path.join(BENCH, "loadcount.py"), "--port", str(self.port),
             "--mode", "keepalive", "--connections", "16"],
            stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        t0 = time.monotonic()
        os.kill(self.server.master_pid, signal.SIGHUP)
        first = every = None
        in_row = 0
        end = t0 + 30
        while time.monotonic() < end:
            try:
                status, body = http_get(self.port, "/", timeout=2.0)
                version = json.loads(body)["version"] if status == 200 else None
            except (OSError, ValueError):
                version = None
            now = time.monotonic()
            if version == 2:
                first = first or now - t0
                in_row += 1
                if in_row >= 40:
                    every = now - t0
                    break
            else:
                in_row = 0
            time.sleep(0.005)
        time.sleep(1)
        load.send_signal(signal.SIGINT)
        out, _ = load.communicate(timeout=30)
        counts = json.loads(out)
        failed = sum(v for k, v in counts.items() if k in ("connect", "reset", "eof", "status", "timeout"))
        return {"first_s": first, "all_s": every, "failed": failed, "ok": counts.get("ok")}


def cell(value, fmt):
    return "—" if value is None else fmt.format(value)


def main():
    m = machine()
    cases = [Case("forkd-preload", "forkd-preload"), Case("forkd", "forkd"),
             Case("gunicorn-preload", "gunicorn-preload")]
    rows = []
    for case in cases:
        log(f"== {case.name}")
        case.start()
        try:
            memory = case.memory()
            log(f"   memory {memory}")
            starts = case.start_times()
            log(f"   worker start ms {[round(t, 1) for t in starts]}")
            hup = case.hup()
            log(f"   HUP {hup}")
        finally:
            case.server.stop()
        rows.append((case, memory, starts, hup))
    lines = [
        "",
        f"## preload_app: a zygote per generation ({m['date']})",
        "",
        machine_line(m),
        "One run of bench/preload.sh on a shared, busy machine (other engineers' builds and "
        "tests ran meanwhile): timings are noisy, memory is not. bench/preload_app.py (FastAPI, "
        f"about 60 MB of Python objects made at import), {WORKERS} workers. Worker start: TTIN "
        f"until the new worker's lifespan startup has run, median of {ROUNDS} (min-max). HUP: the "
        "app's VERSION rewritten, HUP under 16 keep-alive connections (bench/loadcount.py): until "
        "the first answer of the new code, until 40 answers in a row are new, failed requests; "
        "— means the new code never answered within 30 s (Gunicorn's preloading master holds the "
        "old code, and its HUP forks the new workers from it).",
        "",
        "| server | workers' RSS (sum) | workers' PSS (sum) | tree PSS (master, zygote, workers) "
        "| worker start | HUP: first new answer | HUP: all new | failed on HUP |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case, memory, starts, hup in rows:
        lines.append(
            f"| {case.name} | {memory['workers_rss_mib']:.0f} MiB | {memory['workers_pss_mib']:.0f} MiB "
            f"| {memory['tree_pss_mib']:.0f} MiB "
            f"| {median(starts):.0f} ms ({min(starts):.0f}-{max(starts):.0f}) "
            f"| {cell(hup['first_s'], '{:.2f} s')} | {cell(hup['all_s'], '{:.2f} s')} "
            f"| {hup['failed']} of {hup['ok']} |"
        )
    lines.append("")
    text = "\n".join(lines)
    print(text)
    with open(RESULTS, "a") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
