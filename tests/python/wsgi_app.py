"""A plain WSGI app (PEP 3333) for tests/all/wsgi.rs: one path per corner of the spec."""

import json
import os
import resource
import sys
import threading
import time

VERSION = 1
STATE = {"closed": 0, "forever_closed": False}
KEPT = []
LOCK = threading.Lock()


def _json(start_response, value, status="200 OK"):
    body = json.dumps(value).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _query(environ):
    pairs = (p.split("=", 1) for p in environ["QUERY_STRING"].split("&") if "=" in p)
    return dict(pairs)


class Closing:
    """An iterable with close(), counting closes."""

    def __init__(self, chunks, key="closed"):
        self.chunks = chunks
        self.key = key

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        with LOCK:
            if self.key == "closed":
                STATE["closed"] += 1
            else:
                STATE[self.key] = True


def _forever():
    while True:
        yield b"data: tick\n" + b"x" * 65536 + b"\n"
        time.sleep(0.01)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = _query(environ)
    if path == "/":
        return _json(start_response, {"pid": os.getpid(), "version": VERSION, "thread": threading.get_ident()})
    if path.startswith("/environ"):
        shown = {k: v for k, v in environ.items() if isinstance(v, str)}
        shown["wsgi.version"] = list(environ["wsgi.version"])
        for key in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.input_terminated"):
            shown[key] = environ[key]
        shown["input_type"] = type(environ["wsgi.input"]).__name__
        shown["has_file_wrapper"] = callable(environ.get("wsgi.file_wrapper"))
        environ["wsgi.errors"].write("hello from wsgi.errors\n")
        environ["wsgi.errors"].flush()
        return _json(start_response, shown)
    if path == "/upload":
        size = 0
        read = environ["wsgi.input"].read
        while True:
            data = read(65536)
            if not data:
                break
            size += len(data)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return _json(start_response, {"bytes": size, "peak_rss_kib": peak})
    if path == "/lines":
        stream = environ["wsgi.input"]
        first = stream.readline()
        limited = stream.readline(3)
        rest_of_line = stream.readline()
        two = stream.readlines(1)
        remaining = [line for line in stream]
        after = stream.read()
        return _json(
            start_response,
            {
                "first": first.decode(),
                "limited": limited.decode(),
                "rest_of_line": rest_of_line.decode(),
                "two": [x.decode() for x in two],
                "remaining": [x.decode() for x in remaining],
                "after": after.decode(),
            },
        )
    if path == "/read_all":
        data = environ["wsgi.input"].read()
        exact = len(data)
        return _json(start_response, {"bytes": exact, "sum": sum(data) % 65536})
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"from write; ")
        return Closing([b"", b"from the iterable"])
    if path == "/exc_info_before":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise RuntimeError("handled")
        except RuntimeError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("X-Replaced", "yes")], sys.exc_info())
        return [b"replaced"]
    if path == "/exc_info_after":
        def body():
            yield b"first chunk"
            try:
                raise RuntimeError("late failure")
            except RuntimeError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
            yield b"never"

        start_response("200 OK", [("Content-Type", "text/plain")])
        return body()
    if path == "/twice":
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b"no"]
    if path == "/stream":
        n = int(query.get("n", "3"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing([f"chunk {i}\n".encode() for i in range(n)])
    if path == "/closed":
        return _json(start_response, {"closed": STATE["closed"], "forever_closed": STATE["forever_closed"]})
    if path == "/forever":
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return Closing(_forever(), key="forever_closed")
    if path == "/file":
        name = query["name"]
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(name, "rb"), 4096)
    if path == "/short":
        start_response("200 OK", [("Content-Length", "100")])
        return Closing([b"only ten!\n"])
    if path == "/short_stream":
        def body():
            yield b"only ten!\n"
        start_response("200 OK", [("Content-Length", "100")])
        return body()
    if path == "/long":
        start_response("200 OK", [("Content-Length", "5")])
        return [b"12345", b"67890"]
    if path == "/long_stream":
        def body():
            yield b"123"
            yield b"4567890"
        start_response("200 OK", [("Content-Length", "5")])
        return body()
    if path == "/bad_status":
        start_response(query.get("status", "OK"), [])
        return [b"no"]
    if path == "/bad_header":
        start_response("200 OK", [("X-Bad", "a\r\nX-Injected: 1")])
        return [b"no"]
    if path == "/bytes_header":
        start_response("200 OK", [(b"X-Bytes", b"1")])
        return [b"no"]
    if path == "/hop":
        start_response("200 OK", [("Connection", "close"), ("Transfer-Encoding", "chunked"), ("Content-Type", "text/plain")])
        return [b"hop"]
    if path == "/boom":
        raise ValueError("kaboom")
    if path == "/boom_late":
        def body():
            yield b"started"
            raise ValueError("late kaboom")
        start_response("200 OK", [])
        return Closing(body())
    if path == "/none":
        return [b"never called start_response"]
    if path == "/sleep":
        time.sleep(float(query.get("s", "0.2")))
        return _json(start_response, {"pid": os.getpid(), "thread": threading.get_ident()})
    if path == "/keep":
        # The environ (and its wsgi.input, unread) outlives the response.
        KEPT.append(environ)
        return _json(start_response, {"kept": len(KEPT)})
    if path == "/log":
        import logging

        logging.getLogger("app.views").warning("hello from logging in %s", "a pool thread")
        return _json(start_response, {})
    if path == "/slow":
        time.sleep(float(query.get("s", "1.5")))
        print("slow request done")
        return _json(start_response, {"slept": float(query.get("s", "1.5"))})
    if path == "/block":
        time.sleep(float(query.get("seconds", "60")))
        return _json(start_response, {})
    return _json(start_response, {"error": "not found"}, "404 Not Found")


# The same app as an explicit WSGI callable object, and an async one for the mismatch test.
class Wrapped:
    def __call__(self, environ, start_response):
        return app(environ, start_response)


wrapped = Wrapped()


async def asgi_app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"asgi"})


def post_fork(server, worker):
    print(f"post_fork hook ran in {worker.pid}")


def worker_exit(server, worker):
    print(f"worker_exit hook ran in {worker.pid}")


async def _asgi_saying(word, scope, receive, send):
    if scope["type"] == "lifespan":
        await asgi_app(scope, receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": word})


# functools.partial of a coroutine function: still ASGI.
asgi_partial = __import__("functools").partial(_asgi_saying, b"asgi")
