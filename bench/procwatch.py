#!/usr/bin/env python3
"""What the benchmarks read from /proc about a master and its workers, for any pre-fork
server (forkd, Gunicorn): their memory, and rolling restarts driven by HUP.

    procwatch.py memory MASTER_PID
        -> {"master": {"rss_kib", "pss_kib"}, "workers": [{"pid", "rss_kib", "pss_kib"}...]}

    procwatch.py hups MASTER_PID PORT COUNT [--settle S] [--deadline S]
        -> {"seconds": [...]} : for each of COUNT HUPs, the time from the signal until
           the master's worker set is entirely new, as many as before, and every new
           worker is seen polling the listening socket of PORT (an epoll set of the
           worker watches its inode: /proc/PID/fdinfo/N "tfd: ... ino:HEX"). The next
           HUP follows after --settle seconds, so every HUP is a complete restart.

A worker is a direct child of the master. Only signals the given master pid.
"""
import argparse
import json
import os
import signal
import sys
import time

import benchlib


def children(master):
    return set(benchlib.children(master))


def memory_of(pid):
    """(RSS, PSS) in KiB; PSS shares each page among the processes that map it."""
    rss, pss = benchlib.memory_kib(pid)
    return {"rss_kib": rss, "pss_kib": pss}


def listener_inode(port):
    """The inode of the TCP socket listening on 127.0.0.1:PORT (or on any address)."""
    wanted = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] in wanted and fields[3] == "0A":  # 0A = LISTEN
                return int(fields[9])
    sys.exit(f"procwatch: nothing listens on port {port}")


def polls_listener(pid, inode):
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return False
    needle = f"ino:{inode:x}"
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = f.read()
        except OSError:
            continue
        for line in info.splitlines():
            if line.startswith("tfd:") and needle in line.split():
                return True
    return False


def rolling_restart(master, inode, deadline):
    before = children(master)
    if not before:
        sys.exit(f"procwatch: master {master} has no workers")
    started = time.monotonic()
    os.kill(master, signal.SIGHUP)
    while time.monotonic() - started < deadline:
        now = children(master)
        if len(now) == len(before) and not now & before and all(
            polls_listener(pid, inode) for pid in now
        ):
            return time.monotonic() - started
        time.sleep(0.005)
    sys.exit(f"procwatch: the workers of {master} were not all replaced within {deadline}s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mem = sub.add_parser("memory")
    mem.add_argument("master", type=int)
    hups = sub.add_parser("hups")
    hups.add_argument("master", type=int)
    hups.add_argument("port", type=int)
    hups.add_argument("count", type=int)
    hups.add_argument("--settle", type=float, default=0.5)
    hups.add_argument("--deadline", type=float, default=60.0)
    args = parser.parse_args()

    if args.command == "memory":
        workers = [dict(pid=pid, **memory_of(pid)) for pid in sorted(children(args.master))]
        print(json.dumps({"master": memory_of(args.master), "workers": workers}))
    else:
        inode = listener_inode(args.port)
        seconds = []
        for _ in range(args.count):
            seconds.append(round(rolling_restart(args.master, inode, args.deadline), 3))
            time.sleep(args.settle)
        print(json.dumps({"seconds": seconds}))


if __name__ == "__main__":
    main()
