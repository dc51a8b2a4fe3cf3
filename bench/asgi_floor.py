#!/usr/bin/env python3
"""The CPU an ASGI app itself costs per request, with no server at all: the floor under
any server's CPU per request for that app.

Calls the app in-process, one asyncio Task per request (as every ASGI server makes one),
on the event loop the servers use (uvloop when it is installed), with a scope like the
one a server builds (`GET` of TARGET, six request headers, a lifespan `state`), a `receive` that returns the empty request body and a `send` that keeps
nothing. Reports the process's CPU time (user + system) per request, best of ROUNDS
rounds of N requests after a warm-up.

    python bench/asgi_floor.py [--requests 20000] [--rounds 3] MODULE:ATTR[@TARGET]...
    python bench/asgi_floor.py asgi_hello:app asgi_fastapi:app@/items/42?q=hello

TARGET is the request's path and query (default `/`); every answer must be a 200.
The apps are imported from bench/ (or the module path given). Use the virtualenv the
servers run from (bench/asgi.sh runs it with its own), so that FastAPI, pydantic and
uvloop are the same versions.

What the floor says: a server's CPU per request for an app is the app's floor plus the
server's own work, so against a peer that uses P µs per request, a server can at most
be P / floor times as fast per CPU second, however little its own work costs.
"""

import argparse
import asyncio
import importlib
import json
import os
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))

def new_loop():
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop(), "asyncio"
    return uvloop.new_event_loop(), f"uvloop {uvloop.__version__}"


def load(spec):
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def scope_for(target):
    path, _, query = target.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"wrk"),
            (b"accept", b"*/*"),
            (b"accept-encoding", b"gzip"),
            (b"connection", b"keep-alive"),
            (b"x-request-id", b"0123456789abcdef"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def run(app, template, n):
    loop = asyncio.get_running_loop()
    request = {"type": "http.request", "body": b"", "more_body": False}
    statuses = []

    async def receive():
        return request

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    for _ in range(n):
        scope = dict(template)
        scope["state"] = {}
        await loop.create_task(app(scope, receive, send))
    bad = [s for s in statuses if s != 200]
    if len(statuses) != n or bad:
        raise SystemExit(f"the app answered {len(statuses)} of {n} requests, not all 200: {bad[:3]}")


def measure(spec, requests, rounds):
    app_spec, _, target = spec.partition("@")
    app = load(app_spec)
    template = scope_for(target or "/")
    loop, loop_name = new_loop()
    try:
        loop.run_until_complete(run(app, template, min(2000, requests)))
        best = None
        for _ in range(rounds):
            began = time.process_time()
            loop.run_until_complete(run(app, template, requests))
            per_request = (time.process_time() - began) / requests * 1e6
            best = per_request if best is None else min(best, per_request)
    finally:
        loop.close()
    return {"app": spec, "loop": loop_name, "us_per_request": round(best, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("apps", nargs="+", help="MODULE:ATTR[@TARGET], imported from bench/")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="one JSON object per app")
    args = ap.parse_args()
    sys.path.insert(0, BENCH)
    for spec in args.apps:
        result = measure(spec, args.requests, args.rounds)
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{spec}: {result['us_per_request']:.1f} µs CPU per request "
                  f"({result['loop']}, best of {args.rounds} × {args.requests})")


if __name__ == "__main__":
    main()
