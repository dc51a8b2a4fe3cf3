#!/usr/bin/env python3
"""forkd-only measurements that are not throughput:

- start to first response: from spawning `forkd -w 2 hello` to the first 200 answer
  (the client retries the connect until the socket is bound, then waits for a worker);
- a TTIN worker serving: the running workers are SIGSTOPped (so only a new worker can
  accept), TTIN is sent, and a request is made at once; the time until it is answered by
  the new worker (checked through the `echo` app's `pid`) is the time until it serves;
- how requests and connections spread across workers on the shared accept queue, read
  from forkd's scoreboard through its /metrics (see benchlib.read_scoreboard) during and after wrk runs,
  checked against wrk's own request count;
- wake-ups of idle workers: workers' voluntary context switches per new connection
  while connections arrive one at a time, for 1, 2 and 4 workers;
- system calls per keep-alive request in a worker (strace -c attached to it), next to
  the plain hyper server's: what supervision adds to the request path.

    bench/probes.py [--json FILE] [--quick]"""

import argparse
import json
import os
import signal
import subprocess
import time

import benchlib as b


def start_to_first_response(wd, repeats):
    times = []
    for _ in range(repeats):
        port = b.free_port()
        argv = [b.FORKD, "-b", f"127.0.0.1:{port}", "-w", "2", "--log-level", "warn", "hello"]
        t0 = time.monotonic()
        server = b.start("forkd-start", argv, port, wd, wait=False)
        try:
            deadline = t0 + 5
            while True:
                try:
                    status, _ = b.http_get(port, timeout=2)
                    if status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("forkd did not answer within 5 s")
                time.sleep(0.0005)
            times.append((time.monotonic() - t0) * 1000)
        finally:
            server.stop()
    return times


def wait_workers(master, count, deadline_s=10):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if len(b.children(master)) == count:
            return b.children(master)
        time.sleep(0.005)
    raise RuntimeError(f"master {master}: expected {count} workers, have {b.children(master)}")


def ttin_to_serving(wd, repeats):
    server = b.start_forkd(wd, workers=2, app="echo", name="forkd-ttin")
    times = []
    try:
        master = server.master_pid
        for _ in range(repeats):
            old = wait_workers(master, 2)
            b.wait_serving(server.port)
            for pid in old:
                os.kill(pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                os.kill(master, signal.SIGTTIN)
                status, body = b.http_get(server.port, "/", timeout=5)
                elapsed = (time.monotonic() - t0) * 1000
            finally:
                for pid in old:
                    os.kill(pid, signal.SIGCONT)
            served_by = json.loads(body)["pid"]
            if status != 200 or served_by in old:
                raise RuntimeError(f"TTIN probe answered by {served_by} (old: {old}), status {status}")
            times.append(elapsed)
            wait_workers(master, 3)
            os.kill(master, signal.SIGTTOU)
            wait_workers(master, 2)
    finally:
        server.stop()
    return times


def spread(wd, workers, conns, duration, close):
    """Per-worker requests (delta over the run) and open connections (mid-run)."""
    server = b.start_forkd(wd, workers=workers, name=f"forkd-spread{workers}", metrics=True)
    try:
        master = server.master_pid
        wait_workers(master, workers)
        before = b.read_scoreboard(server)
        extra = ["-H", "Connection: close"] if close else []
        argv = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "5s", *extra,
                f"http://127.0.0.1:{server.port}/"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(duration / 2)
        mid = b.read_scoreboard(server)
        out, _ = proc.communicate(timeout=duration + 60)
        after = b.read_scoreboard(server)
        total_wrk = b.parse_wrk(out + "\n50% 0us\n99% 0us\n").requests if "requests in" in out else 0
        per_worker = [{"requests": after[p][0] - before.get(p, (0, 0))[0],
                       "open_connections_mid_run": mid.get(p, (0, 0))[1]} for p in sorted(after)]
        return {"workers": workers, "conns": conns, "close": close, "wrk_requests": total_wrk,
                "per_worker": per_worker}
    finally:
        server.stop()


def wakeups(wd, workers, connections):
    """Context switches per new connection arriving one at a time (each worker idle)."""
    server = b.start_forkd(wd, workers=workers, name=f"forkd-wake{workers}", metrics=True)
    try:
        master = server.master_pid
        pids = wait_workers(master, workers)
        b.wait_serving(server.port)
        # Idle rate first (the progress timer ticks), to subtract it.
        idle0 = {p: b.context_switches(p) for p in pids}
        t_idle = time.monotonic()
        time.sleep(2)
        idle = sum(b.context_switches(p) - idle0[p] for p in pids) / (time.monotonic() - t_idle)
        score0 = b.read_scoreboard(server)
        cs0 = {p: b.context_switches(p) for p in pids}
        t0 = time.monotonic()
        for _ in range(connections):
            status, _ = b.http_get(server.port)
            if status != 200:
                raise RuntimeError(f"status {status}")
        elapsed = time.monotonic() - t0
        score1 = b.read_scoreboard(server)
        per_worker = []
        for p in pids:
            per_worker.append({"accepted": score1[p][0] - score0[p][0],
                               "wakeups": b.context_switches(p) - cs0[p]})
        total = sum(w["wakeups"] for w in per_worker) - idle * elapsed
        return {"workers": workers, "connections": connections, "per_worker": per_worker,
                "idle_wakeups_per_s": idle, "seconds": elapsed,
                "wakeups_per_connection": total / connections}
    finally:
        server.stop()


def syscalls_per_request(wd, n, hyper=False):
    """strace -c on the serving process while n keep-alive requests are made: {syscall:
    calls per request}."""
    from allocs import keepalive_requests
    if hyper:
        server = b.start_hyper(wd, threads=1)
        target = server.master_pid
    else:
        server = b.start_forkd(wd, workers=1, name="forkd-strace")
        target = wait_workers(server.master_pid, 1)[0]
    out = os.path.join(wd, f"strace-{'hyper' if hyper else 'forkd'}.txt")
    try:
        tracer = subprocess.Popen(["strace", "-f", "-c", "-o", out, "-p", str(target)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # attached (strace prints nothing to say so)
        keepalive_requests(server.port, n)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
    finally:
        server.stop()
    calls = {}
    with open(out) as f:
        for line in f:
            parts = line.split()
            # "% time  seconds  usecs/call  calls  [errors]  syscall"
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                calls[parts[-1]] = int(parts[3])
    return {name: round(count / n, 3) for name, count in sorted(calls.items(), key=lambda x: -x[1])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true", help="short runs, for checking the script")
    args = ap.parse_args()
    wd = b.workdir()
    repeats = 3 if args.quick else 15
    duration = 3 if args.quick else 10
    result = {}
    result["start_ms"] = start_to_first_response(wd, repeats)
    b.log(f"start to first response ms: {[round(t, 1) for t in result['start_ms']]}")
    result["ttin_ms"] = ttin_to_serving(wd, repeats)
    b.log(f"TTIN to serving ms: {[round(t, 1) for t in result['ttin_ms']]}")
    result["spread"] = []
    for workers, conns, close in [(2, 64, False), (2, 256, False), (2, 64, True), (4, 64, False),
                                  (4, 64, True)]:
        r = spread(wd, workers, conns, duration, close)
        b.log(f"spread: {r}")
        result["spread"].append(r)
    result["wakeups"] = []
    for workers in (1, 2, 4):
        r = wakeups(wd, workers, 300 if args.quick else 2000)
        b.log(f"wakeups: {r}")
        result["wakeups"].append(r)
    result["syscalls"] = {"requests": 300 if args.quick else 5000}
    for label, hyper in (("forkd", False), ("hyper", True)):
        r = syscalls_per_request(wd, result["syscalls"]["requests"], hyper=hyper)
        b.log(f"syscalls per request, {label}: {r}")
        result["syscalls"][label] = r
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
