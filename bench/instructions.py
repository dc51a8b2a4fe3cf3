#!/usr/bin/env python3
"""Instructions a worker executes per keep-alive request, counted by valgrind's
callgrind: repeatable whatever else the machine is doing (the machines here are shared
and their req/s swing by 3x between rounds, while `perf stat` cannot count instructions
on them). For each forkd binary given, a 1-worker `hello` server runs under callgrind,
gets N1 and then, in a second run, N2 requests over 8 keep-alive connections, and the
worker's total instructions of the two runs give (I2 - I1) / (N2 - N1): the cost of one
more request, start-up and drain cancelled out.

    bench/instructions.py OLD_FORKD NEW_FORKD [--n1 2000] [--n2 12000] [--label A --label B]

A binary given as `hyper:PATH` is the plain hyper server (bench/hyper-hello, one runtime
thread): its one process is counted, as the worker is for forkd.

    bench/instructions.py hyper:bench/hyper-hello/target/release/hyper-hello target/release/forkd

With --asgi MODULE:ATTR (an app in bench/, e.g. asgi_hello:app) the worker serves that
Python ASGI app instead: each argument is then a directory holding a `forkd` Python
package (its extension module built in, e.g. a copy of python/py/forkd with the release
`_native*.so`), run as `PYTHON -m forkd` with that directory first on PYTHONPATH
(--python: a virtualenv's interpreter with what the app needs). Both of the worker's
threads (the asyncio loop and forkd's server thread) are counted.

With --together a request goes out on every connection before the responses are read
(--connections 32 --together: batches of up to 32 requests, as a loaded worker sees them,
where the loop is woken once for many requests); without it, one request at a time (every
request pays a whole wake-up of both threads).

Prints one line per binary and, with --markdown FILE, appends a table to FILE."""

import argparse
import glob
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: instructions.py\r\n\r\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_response(sock, buf):
    """Reads one response with a Content-Length body; returns the leftover bytes."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed in body")
        rest += chunk
    return rest[length:]


def drive(port, total, connections=8, together=False):
    """`total` requests over `connections` keep-alive connections: one at a time, or
    (`together`) one on every connection before the responses are read, so that the
    server finds them all ready at once (a loaded server's batches)."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(connections)]
    bufs = [b""] * connections
    sent = 0
    while sent < total:
        if together:
            batch = socks[:total - sent]
            for s in batch:
                s.sendall(REQUEST)
            for i, s in enumerate(batch):
                bufs[i] = read_response(s, bufs[i])
            sent += len(batch)
            continue
        for i, s in enumerate(socks):
            if sent >= total:
                break
            s.sendall(REQUEST)
            bufs[i] = read_response(s, bufs[i])
            sent += 1
    for s in socks:
        s.close()


def worker_instructions(binary, requests, work, asgi=None, python=None, connections=8, together=False):
    out = os.path.join(work, f"cg-{os.getpid()}-{time.monotonic_ns()}")
    os.makedirs(out)
    port = free_port()
    log = open(os.path.join(out, "forkd.log"), "w")
    # The output option goes in ./.valgrindrc, not on the command line: forkd rewrites
    # its argv memory for its process titles, and a forked worker's valgrind reads the
    # option from there again when it names its own output file.
    with open(os.path.join(out, ".valgrindrc"), "w") as rc:
        rc.write(f"--callgrind-out-file={out}/cg.%p\n")
    env = dict(os.environ)
    hyper = binary.startswith("hyper:")
    if hyper:
        argv = [binary[len("hyper:"):], f"127.0.0.1:{port}", "1"]
    elif asgi:
        bench = os.path.dirname(os.path.abspath(__file__))
        env["PYTHONPATH"] = f"{os.path.abspath(binary)}:{bench}"
        # A fixed hash seed: with a random one a build's count moves by about 400.
        env.setdefault("PYTHONHASHSEED", "0")
        argv = [python, "-m", "forkd", "--access-log", "off",
                "-b", f"127.0.0.1:{port}", "-w", "1", asgi]
    else:
        argv = [binary, "-b", f"127.0.0.1:{port}", "-w", "1", "hello"]
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", *argv],
        stdout=subprocess.DEVNULL, stderr=log, cwd=out, env=env)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                drive(port, 1, 1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{binary} did not start under valgrind")
                time.sleep(0.2)
        drive(port, requests - 1, connections, together)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    counts = []
    for path in glob.glob(f"{out}/cg.*"):
        pid = int(path.rsplit(".", 1)[1])
        if pid == proc.pid and not hyper:
            continue  # the master
        with open(path) as f:
            text = f.read()
        match = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
        if match:
            counts.append(int(match.group(1)))
            profile = path
    if len(counts) != 1:
        raise RuntimeError(f"expected one worker profile, found {len(counts)} in {out}")

    # The profile stays for `callgrind_annotate` (where the instructions go).
    print(f"  {requests} requests: {profile}", file=sys.stderr, flush=True)
    return counts[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--n1", type=int, default=2000)
    parser.add_argument("--n2", type=int, default=12000)
    parser.add_argument("--markdown")
    parser.add_argument("--asgi", help="MODULE:ATTR of a Python ASGI app in bench/")
    parser.add_argument("--python", default=sys.executable, help="the interpreter for --asgi")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections (8)")
    parser.add_argument("--together", action="store_true",
                        help="a request on every connection before reading the responses (batches, "
                             "as under load) instead of one request at a time")
    args = parser.parse_args()
    labels = args.label + args.binaries[len(args.label):]
    work = tempfile.mkdtemp(prefix="forkd-instructions-")
    rows = []
    for label, binary in zip(labels, args.binaries):
        i1 = worker_instructions(binary, args.n1, work, args.asgi, args.python, args.connections, args.together)
        i2 = worker_instructions(binary, args.n2, work, args.asgi, args.python, args.connections, args.together)
        per = (i2 - i1) / (args.n2 - args.n1)
        rows.append((label, per))
        print(f"{label}: {per:,.0f} instructions per keep-alive request ({i1:,} at {args.n1}, {i2:,} at {args.n2})", flush=True)
    if args.markdown:
        base = rows[0][1]
        with open(args.markdown, "a") as f:
            f.write("\n| build | worker instructions per keep-alive request | vs first |\n| --- | --- | --- |\n")
            for label, per in rows:
                f.write(f"| {label} | {per:,.0f} | {(per - base) * 100 / base:+.1f}% |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
