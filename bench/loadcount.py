#!/usr/bin/env python3
"""HTTP/1.1 load client for the benchmarks that counts every failed request, by kind.

    loadcount.py --port 8000 --mode keepalive --connections 32 [--path /items/7?q=x]

runs until SIGINT or SIGTERM (or --duration seconds), then prints one JSON object:
the mode, how many requests got a 2xx answer, and every failure by kind:

    connect   the connection could not be opened (refused, reset during connect)
    reset     the connection was reset or broken while sending or reading
    eof       the server closed the connection before a complete response
    status    a complete response whose status is not 2xx
    timeout   no complete response within --timeout seconds

`keepalive` reuses each connection for as many requests as the server allows (a
response with `Connection: close` ends it without counting a failure); `close` opens a
fresh connection per request (`Connection: close`), as a proxy that does not pool does.
A request that fails is not retried: the next request starts a new connection. wrk
counts the same things, but adds them up in one number for keep-alive only.

--tls speaks HTTPS (Python's ssl module, the server's certificate not verified, no
session resumption); a failed handshake counts as `connect`.
"""
import argparse
import asyncio
import json
import signal
import ssl
import sys
import time

KINDS = ("connect", "reset", "eof", "status", "timeout")


class Failure(Exception):
    def __init__(self, kind, detail):
        super().__init__(detail)
        self.kind = kind


class Tally:
    def __init__(self):
        self.ok = 0
        self.failed = dict.fromkeys(KINDS, 0)
        self.examples = {}

    def fail(self, failure):
        self.failed[failure.kind] += 1
        self.examples.setdefault(failure.kind, str(failure))


async def read_response(reader):
    """Reads one response; returns (status, server_closes). Raises Failure."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        raise Failure("eof", f"closed after {len(e.partial)} bytes of the response head")
    except asyncio.LimitOverrunError:
        raise Failure("status", "response head too long")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise Failure("status", f"bad status line {lines[0]!r}")
    status = int(parts[1])
    length = None
    closes = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "connection" and value.strip().lower() == "close":
            closes = True
    try:
        if length is not None:
            await reader.readexactly(length)
        else:
            # No length: the body ends with the connection (the hello apps always send one).
            await reader.read()
            closes = True
    except asyncio.IncompleteReadError as e:
        raise Failure("eof", f"closed after {len(e.partial)} of {length} body bytes")
    return status, closes


async def open_connection(port, tls):
    try:
        return await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    except OSError as e:  # ssl.SSLError is one too: a failed handshake
        raise Failure("connect", f"connect: {type(e).__name__}: {e}")


async def one_request(state, port, tls, request, keep_alive):
    """Sends one request on the connection in `state` (opening one if needed)."""
    if state.get("conn") is None:
        state["conn"] = await open_connection(port, tls)
    reader, writer = state["conn"]
    try:
        writer.write(request)
        await writer.drain()
        status, closes = await read_response(reader)
    except OSError as e:  # reset, broken pipe
        raise Failure("reset", f"{type(e).__name__}: {e}")
    if closes or not keep_alive:
        # Let the server close first, so that TIME_WAIT stays on its side and this
        # client never runs out of ephemeral ports (which would look like a failure).
        try:
            await reader.read()
        except OSError:
            pass  # the response is complete: whatever happens now is no failure
        close(state)
    if not 200 <= status < 300:
        raise Failure("status", f"status {status}")


def close(state):
    conn = state.pop("conn", None)
    if conn is not None:
        conn[1].close()


async def connection_loop(port, tls, keep_alive, timeout, tally, stopping, path="/"):
    request = b"GET %s HTTP/1.1\r\nHost: bench\r\n" % path.encode("ascii")
    request += b"\r\n" if keep_alive else b"Connection: close\r\n\r\n"
    state = {}
    while not stopping.is_set():
        try:
            await asyncio.wait_for(one_request(state, port, tls, request, keep_alive), timeout)
            tally.ok += 1
        except Failure as failure:
            tally.fail(failure)
            close(state)
            if failure.kind == "connect":
                await asyncio.sleep(0.01)  # no busy loop while nothing listens
        except asyncio.TimeoutError:
            tally.fail(Failure("timeout", f"no response within {timeout}s"))
            close(state)
    close(state)


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("keepalive", "close"), required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=0, help="0 = until a signal")
    parser.add_argument("--tls", action="store_true", help="HTTPS, certificate not verified")
    parser.add_argument("--path", default="/", help="the request target (default /)")
    args = parser.parse_args()
    tls = None
    if args.tls:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        tls.set_alpn_protocols(["http/1.1"])

    tally = Tally()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    if args.duration:
        loop.call_later(args.duration, stopping.set)
    started = time.monotonic()
    keep_alive = args.mode == "keepalive"
    await asyncio.gather(
        *(
            connection_loop(args.port, tls, keep_alive, args.timeout, tally, stopping, args.path)
            for _ in range(args.connections)
        )
    )
    elapsed = time.monotonic() - started
    print(
        json.dumps(
            {
                "mode": args.mode,
                "tls": args.tls,
                "connections": args.connections,
                "seconds": round(elapsed, 2),
                "ok": tally.ok,
                "failed": sum(tally.failed.values()),
                "kinds": tally.failed,
                "examples": tally.examples,
            }
        )
    )


if __name__ == "__main__":
    try:
        import uvloop  # the servers' event loop too, when installed
    except ImportError:
        uvloop = None
    sys.exit((uvloop.run if uvloop else asyncio.run)(main()))
