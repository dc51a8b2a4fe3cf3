#!/usr/bin/env python3
"""Does EPOLLEXCLUSIVE stop the thundering herd on a shared listening socket, in the
way a forkd worker could use it? forkd's workers wait in tokio's epoll, and mio (under
tokio) has no way to register a socket with EPOLLEXCLUSIVE; the one way in without
patching them is a nested epoll: an inner epoll fd holding the listener with
EPOLLEXCLUSIVE, itself registered in the runtime's epoll. This runs N pre-forked
"workers" on one listener in five modes and counts, per new connection arriving while
every worker sleeps, the workers' context switches (a worker woken by the kernel whose
epoll_wait then finds the connection taken goes back to sleep without returning, but
it was still scheduled) and their returns from epoll_wait:

  plain           listener in each worker's epoll, level-triggered
  edge            the same, edge-triggered (what tokio / mio do today)
  exclusive       listener with EPOLLEXCLUSIVE, the worker blocks in that epoll
  nested          inner epoll with the listener, registered in an outer epoll
  nested-excl     the same, the inner registration with EPOLLEXCLUSIVE

    bench/epoll_exclusive.py [--workers 4] [--connections 400] [--json FILE]"""

import argparse
import json
import os
import resource
import select
import signal
import socket
import time

MODES = ("plain", "edge", "exclusive", "nested", "nested-excl")


class Stop(Exception):
    pass


def stop_worker(*_):
    # Raised out of epoll_wait: Python would otherwise retry the wait after the handler.
    raise Stop()


def worker(listener, mode, report_fd):
    """Waits for connections until told to stop (SIGTERM); writes "switches returns
    accepted"."""
    signal.signal(signal.SIGTERM, stop_worker)
    flags = select.EPOLLIN | (select.EPOLLEXCLUSIVE if mode in ("exclusive", "nested-excl") else 0)
    flags |= select.EPOLLET if mode == "edge" else 0
    inner = select.epoll()
    inner.register(listener.fileno(), flags)
    waiter = inner
    if mode.startswith("nested"):
        waiter = select.epoll()
        waiter.register(inner.fileno(), select.EPOLLIN)
    wakeups = accepted = 0
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
    try:
        while True:
            events = waiter.poll(-1)
            if not events:
                continue
            wakeups += 1
            if mode.startswith("nested"):
                inner.poll(0)  # consume the inner readiness, as a runtime would
            while True:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    break
                accepted += 1
                conn.sendall(b"x")
                conn.close()
    except Stop:
        pass
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - switches
    os.write(report_fd, f"{switches} {wakeups} {accepted}\n".encode())
    os._exit(0)


def run(mode, workers, connections):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    read_end, write_end = os.pipe()
    pids = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            worker(listener, mode, write_end)
        pids.append(pid)
    os.close(write_end)
    time.sleep(0.3)  # every worker is waiting
    for _ in range(connections):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            if c.recv(1) != b"x":
                raise RuntimeError("no answer")
        time.sleep(0.001)  # let the woken workers go back to sleep: one arrival at a time
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for pid in pids:
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                for p in pids:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                raise RuntimeError(f"{mode}: workers did not stop")
            time.sleep(0.01)
    with os.fdopen(read_end) as f:
        rows = [tuple(int(x) for x in line.split()) for line in f.read().split("\n") if line]
    listener.close()
    # Each worker's last switch is the stop signal's wake-up: not a connection's.
    switches = sum(r[0] - 1 for r in rows)
    returns = sum(r[1] for r in rows)
    return {"mode": mode, "workers": workers, "connections": connections,
            "accepted": sum(r[2] for r in rows),
            "switches_per_connection": round(switches / connections, 2),
            "returns_per_connection": round(returns / connections, 2),
            "accepted_per_worker": [r[2] for r in rows]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--connections", type=int, default=400)
    ap.add_argument("--json")
    args = ap.parse_args()
    results = [run(mode, args.workers, args.connections) for mode in MODES]
    for r in results:
        print(f"{r['mode']:>12}: {r['switches_per_connection']:.2f} context switches and "
              f"{r['returns_per_connection']:.2f} epoll_wait returns per connection, "
              f"accepted per worker {r['accepted_per_worker']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
