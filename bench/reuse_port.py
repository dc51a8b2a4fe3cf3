#!/usr/bin/env python3
"""Why forkd keeps one shared accept queue instead of an SO_REUSEPORT socket per worker.

With SO_REUSEPORT every worker has its own listening socket and its own accept queue,
and the kernel hashes each new connection to one of them: an even spread and no
thundering herd, for free. The price is paid at every reload: a worker that stops
takes its accept queue with it, and the connections waiting in it (handshake done, the
client already sending) are reset. With one shared queue (forkd: the master binds, the
workers inherit it) a stopping worker only stops taking from the queue; whatever is in
it is served by the others.

This runs pre-forked Python workers (each request costs 2 ms of "work", so queues
form) under a connection-per-request load of 16 client threads, and replaces one
worker every 100 ms in the way a rolling reload does (start the new one, wait until it
accepts, then stop the old one), counting every failed request:

  shared                one listener made by the parent, inherited by every worker
  reuseport             a listener per worker, SO_REUSEPORT, closed when it stops
  reuseport+migrate     the same with net.ipv4.tcp_migrate_req = 1 (Linux 5.14+:
                        queued connections move to another socket of the group when
                        one closes), run in a private network namespace so the host's
                        setting is not touched

and, without any replacement, how the connections spread over the workers.

    bench/reuse_port.py [--workers 4] [--seconds 6] [--json FILE]"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import benchlib as b

WORK_S = 0.002
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def serve(listener, ready_fd, count_fd):
    """A worker: accept, read the request head, 'work', answer, close; on SIGTERM stop
    accepting (close the listener), finish the connection at hand and exit."""
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True
        listener.close()

    signal.signal(signal.SIGTERM, stop)
    os.write(ready_fd, b"r")
    os.close(ready_fd)
    served = 0
    while not stopping:
        try:
            conn, _ = listener.accept()
        except OSError:
            break
        with conn:
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                time.sleep(WORK_S)
                conn.sendall(RESPONSE)
                served += 1
            except OSError:
                pass
    os.write(count_fd, f"{served}\n".encode())
    os._exit(0)


def reuseport_listener(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1024)
    return s


class Pool:
    def __init__(self, mode, workers):
        self.mode = mode
        self.count_r, self.count_w = os.pipe()
        self.shared = None
        if mode == "shared":
            self.shared = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.shared.bind(("127.0.0.1", 0))
            self.shared.listen(1024)
            self.port = self.shared.getsockname()[1]
        else:
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
            probe.close()
        self.pids = [self.spawn() for _ in range(workers)]

    def spawn(self):
        """Forks a worker and returns once it is accepting."""
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            listener = self.shared if self.shared else reuseport_listener(self.port)
            serve(listener, ready_w, self.count_w)
        os.close(ready_w)
        os.read(ready_r, 1)
        os.close(ready_r)
        return pid

    def replace(self, index):
        new = self.spawn()
        old = self.pids[index]
        os.kill(old, signal.SIGTERM)
        os.waitpid(old, 0)
        self.pids[index] = new

    def stop(self):
        """Stops every worker; returns the requests each one served (in stop order)."""
        for pid in self.pids:
            os.kill(pid, signal.SIGTERM)
        for pid in self.pids:
            os.waitpid(pid, 0)
        os.close(self.count_w)
        with os.fdopen(self.count_r) as f:
            return [int(line) for line in f.read().split()]


def load(port, stop, tally, lock):
    while not stop.is_set():
        try:
            status, body = b.http_get(port, timeout=5)
            ok = status == 200 and body == b"ok"
            error = None if ok else "short or empty response"
        except OSError as e:
            ok, error = False, type(e).__name__
        with lock:
            tally["requests"] += 1
            if not ok:
                tally["failed"] += 1
                tally["errors"][error] = tally["errors"].get(error, 0) + 1


def run(mode, workers, seconds, replace):
    pool = Pool(mode, workers)
    stop, lock = threading.Event(), threading.Lock()
    tally = {"requests": 0, "failed": 0, "errors": {}}
    clients = [threading.Thread(target=load, args=(pool.port, stop, tally, lock))
               for _ in range(16)]
    for c in clients:
        c.start()
    replaced = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if replace:
            pool.replace(replaced % workers)
            replaced += 1
    stop.set()
    for c in clients:
        c.join()
    served = pool.stop()
    result = {"mode": mode, "workers": workers, "seconds": seconds, "replaced": replaced,
              **tally}
    if not replace:
        result["served_per_worker"] = served
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--json")
    ap.add_argument("--modes", default="shared,reuseport,reuseport+migrate")
    args = ap.parse_args()
    results = []
    for mode in args.modes.split(","):
        if mode == "reuseport+migrate":
            results += migrate_in_private_namespace(args)
            continue
        results += [run(mode, args.workers, args.seconds, replace) for replace in (False, True)]
    if os.environ.get("REUSE_PORT_INNER"):
        print(json.dumps(results))  # to the outer run, which reports
        return
    for r in results:
        print(f"{r['mode']:>18} {'rolling' if r['replaced'] else 'steady':>7}: {r['failed']} of "
              f"{r['requests']} requests failed {r['errors']}, {r['replaced']} workers replaced"
              + (f", served per worker {r['served_per_worker']}" if not r["replaced"] else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def migrate_in_private_namespace(args):
    """Re-runs this script's reuseport mode in a new network namespace (loopback up,
    tcp_migrate_req = 1) and returns its results, relabelled."""
    if os.environ.get("REUSE_PORT_INNER"):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        with open("/proc/sys/net/ipv4/tcp_migrate_req", "w") as f:
            f.write("1")
        results = []
        for replace in (False, True):
            r = run("reuseport", args.workers, args.seconds, replace)
            r["mode"] = "reuseport+migrate"
            results.append(r)
        return results
    out = subprocess.run(
        ["unshare", "--net", sys.executable, os.path.abspath(__file__), "--modes",
         "reuseport+migrate", "--workers", str(args.workers), "--seconds", str(args.seconds)],
        env={**os.environ, "REUSE_PORT_INNER": "1"}, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"reuseport+migrate skipped: {out.stderr.strip()[-300:]}", file=sys.stderr)
        return []
    return json.loads(out.stdout)


if __name__ == "__main__":
    main()
