#!/usr/bin/env python3
"""Heap allocations per `hello` request in a forkd worker, counted by valgrind's DHAT.

forkd runs under `valgrind --tool=dhat` with one worker (valgrind follows the fork and
writes one profile per process). Three runs: a baseline that serves only the readiness
probe, N requests on one keep-alive connection, and N requests on a new connection
each. The worker's allocations beyond the baseline, divided by N, are the allocations
per request; the allocation sites that grow with N are listed.

    bench/allocs.py [--requests 2000] [--json FILE]"""

import argparse
import json
import os
import signal
import socket
import subprocess
import time

import benchlib as b


def keepalive_requests(port, n):
    """n requests on one HTTP/1.1 keep-alive connection, each read to its end."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        buf = b""
        for _ in range(n):
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("connection closed mid-response")
                buf += chunk
            head, _, rest = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(rest) < length:
                rest += s.recv(65536)
            if not head.startswith(b"HTTP/1.1 200") or rest[:length] != b.HELLO_BODY:
                raise RuntimeError(f"unexpected response: {head!r} {rest[:length]!r}")
            buf = rest[length:]


def profile(wd, label, load, hyper=False):
    """Runs forkd (or, with `hyper`, the plain hyper server) under DHAT, applies
    `load(port)`, stops it; returns the profile of forkd's worker (or of hyper-hello)."""
    port = b.free_port()
    out_dir = os.path.join(wd, f"dhat-{label}")
    os.makedirs(out_dir)
    # DHAT's default file name (dhat.out.PID, in the working directory): an explicit
    # --dhat-out-file is lost once forkd rewrites its argv memory for its process title.
    if hyper:
        server_argv = [b.HYPER_HELLO, f"127.0.0.1:{port}", "1"]
    else:
        server_argv = [b.FORKD, "-b", f"127.0.0.1:{port}", "-w", "1", "--log-level", "warn",
                       "hello"]
    server = b.start(f"dhat-{label}", ["valgrind", "--tool=dhat", *server_argv], port, wd,
                     cwd=out_dir, wait=False)
    try:
        b.wait_serving(port, deadline_s=120)
        worker = [server.master_pid] if hyper else b.children(server.master_pid)
        load(port)
        # A graceful stop: the worker drains and exits normally, so DHAT writes its file.
        os.kill(server.master_pid, signal.SIGTERM)
        server.proc.wait(timeout=120)
    finally:
        server.stop()
    files = [f for f in os.listdir(out_dir) if f.startswith("dhat.out.")]
    worker_files = [f for f in files if any(f == f"dhat.out.{p}" for p in worker)]
    if len(worker_files) != 1:
        raise RuntimeError(f"expected one worker profile for {worker} in {out_dir}, found {files}")
    with open(os.path.join(out_dir, worker_files[0])) as f:
        return json.load(f)


def sites(prof, depth=6):
    """{allocation site (innermost frames outside the allocator): blocks}."""
    out = {}
    for pp in prof["pps"]:
        frames = [prof["ftbl"][i] for i in pp["fs"]]
        useful = [fr for fr in frames if not any(k in fr for k in (
            "alloc::alloc", "__rust_alloc", "__rdl_alloc", "malloc", "realloc", "calloc",
            "alloc::raw_vec", "RawVec", "[root]"))]
        key = " <- ".join(fr.split(": ", 1)[-1].split(" (")[0] for fr in useful[:depth])
        out[key] = out.get(key, 0) + pp["tbk"]
    return out


# DHAT's JSON: "tbk" is the total number of blocks (allocations), "tb" their bytes.
def total_blocks(prof):
    return sum(pp["tbk"] for pp in prof["pps"])


def total_bytes(prof):
    return sum(pp["tb"] for pp in prof["pps"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--json")
    args = ap.parse_args()
    n = args.requests
    wd = b.workdir()
    t0 = time.monotonic()
    base = profile(wd, "baseline", lambda port: None)
    keep = profile(wd, "keepalive", lambda port: keepalive_requests(port, n))

    def one_per_connection(port):
        for _ in range(n):
            status, body = b.http_get(port, timeout=30)
            if status != 200 or body != b.HELLO_BODY:
                raise RuntimeError(f"unexpected response {status} {body!r}")
    fresh = profile(wd, "newconn", one_per_connection)
    hyper_base = profile(wd, "hyper-baseline", lambda port: None, hyper=True)
    hyper_keep = profile(wd, "hyper-keepalive", lambda port: keepalive_requests(port, n),
                         hyper=True)
    result = {"requests": n}
    for label, prof, base in (("keepalive", keep, base), ("new_connection", fresh, base),
                              ("hyper_keepalive", hyper_keep, hyper_base)):
        blocks = (total_blocks(prof) - total_blocks(base)) / n
        nbytes = (total_bytes(prof) - total_bytes(base)) / n
        base_sites = sites(base)
        growth = sorted(((v - base_sites.get(k, 0)) / n, k) for k, v in sites(prof).items())
        top = [{"per_request": round(v, 2), "site": k} for v, k in reversed(growth) if v >= 0.05]
        result[label] = {"allocations_per_request": round(blocks, 2),
                         "bytes_per_request": round(nbytes, 1), "sites": top[:12]}
        b.log(f"{label}: {blocks:.2f} allocations, {nbytes:.0f} bytes per request")
        for s in top[:12]:
            b.log(f"  {s['per_request']:6.2f}  {s['site']}")
    b.log(f"({time.monotonic() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
