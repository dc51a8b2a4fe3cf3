"""The Python half of a forkd worker serving a WSGI app (PEP 3333; the Rust half is
forkd._native's ``Pool``, ``Call`` and ``Input``).

``interface`` tells an ASGI app from a WSGI one after the import; ``start`` starts the
pool's threads, each running ``Pool.serve``, which calls ``handle`` for each request;
``run`` is the main thread's part: wait for the worker's drain to end, then the
``worker_exit`` hook. ``FileWrapper`` is ``wsgi.file_wrapper``.
"""

import asyncio
import functools
import inspect
import logging
import sys
import threading
import time

#: What ``FileWrapper`` reads at a time at least: a file is sent in large chunks, each
#: read with the GIL released (a file object's read() releases it for the system call).
FILE_CHUNK = 256 * 1024




def _unwrap(obj):
    while isinstance(obj, functools.partial):
        obj = obj.func
    return obj


def _is_coroutine_function(obj):
    obj = _unwrap(obj)
    return inspect.iscoroutinefunction(obj) or asyncio.iscoroutinefunction(obj)


def is_asgi(app):
    """An ASGI 3 app is a coroutine function, or an object whose ``__call__`` is one
    (FastAPI, Starlette, Django's ASGIHandler); anything else callable is taken as WSGI
    (a function, Flask's app, Django's WSGIHandler). A class is WSGI: calling it makes
    an instance (ASGI 2's double callable is not served)."""
    app = _unwrap(app)
    if _is_coroutine_function(app):
        return True
    if inspect.isclass(app):
        return False
    call = getattr(type(app), "__call__", None)
    if call is None:
        return False
    return _is_coroutine_function(call)


def interface(app, configured, spec, boot_error):
    """"asgi" or "wsgi" for ``app`` under ``[python] interface`` (``configured``);
    ``boot_error`` is raised for an app that does not fit an explicit value."""
    asgi = is_asgi(app)
    if configured == "auto":
        return "asgi" if asgi else "wsgi"
    if configured == "wsgi" and asgi:
        raise boot_error(
            f"python.interface = \"wsgi\", but {spec!r} is an ASGI app (a coroutine function or an "
            f"object with an async __call__): set interface = \"asgi\" or \"auto\""
        )
    if configured == "asgi" and not asgi and _positional_parameters(app) == 2:
        raise boot_error(
            f"python.interface = \"asgi\", but {spec!r} is a WSGI app (it takes (environ, start_response)): "
            f"set interface = \"wsgi\" or \"auto\""
        )
    # An ASGI app whose __call__ is a plain function returning a coroutine cannot be
    # told from a WSGI one by its type: said explicitly, it is served as ASGI.
    return configured


def _positional_parameters(app):
    """How many positional parameters calling ``app`` takes; None if unknown (a
    builtin, *args)."""
    try:
        parameters = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        return None
    count = 0
    for parameter in parameters:
        if parameter.kind == parameter.VAR_POSITIONAL:
            return None
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


class FileWrapper:
    """``wsgi.file_wrapper``: iterates a file-like object in chunks of at least
    ``FILE_CHUNK`` bytes, and closes it when the response is done (PEP 3333)."""

    def __init__(self, filelike, block_size=8192):
        self.filelike = filelike
        self.block_size = max(block_size, FILE_CHUNK)
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read = self.filelike.read
        size = self.block_size
        while True:
            data = read(size)
            if not data:
                return
            yield data


def _log():
    return logging.getLogger("forkd.wsgi")


def handle(app, environ, call):
    """Runs the app for one request and sends its response through ``call``; the
    iterable's ``close()`` is always called, also when the client leaves or the app
    fails. An exception is logged and answered with a 500 (or cuts the response, if
    its head went already): the worker lives on."""
    result = None
    try:
        result = app(environ, call.start_response)
        if type(result) is list:
            call.whole(result)
        else:
            write = call.write
            for data in result:
                write(data)
            call.finish()
    except BaseException as exc:  # noqa: BLE001 - the worker lives on
        if call.gone:
            print(
                f"client gone during {environ['REQUEST_METHOD']} {environ['PATH_INFO']}; "
                f"the app ended with {type(exc).__name__}"
            )
        else:
            _log().error(
                "Exception in WSGI application (%s %s)",
                environ["REQUEST_METHOD"],
                environ["PATH_INFO"],
                exc_info=exc,
            )
        call.fail()
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            try:
                close()
            except BaseException as exc:  # noqa: BLE001 - logged, the worker lives on
                _log().error("close() of the WSGI response raised", exc_info=exc)


_THREADS = []


def start(pool, threads):
    """Starts the pool's ``threads`` threads (daemons: a thread stuck in the app must
    not keep a stopping worker alive)."""
    for number in range(threads):
        thread = threading.Thread(target=pool.serve, name=f"forkd-wsgi-{number}", daemon=True)
        thread.start()
        _THREADS.append(thread)


def run(pool):
    """The main thread: waits for the worker's drain to end, then lets the pool's
    threads finish and runs the ``worker_exit`` hook."""
    from forkd import _worker

    try:
        pool.wait_stopped()
        # The drain is over, so the threads are done unless one is stuck in the app:
        # that one is not waited for past a second (daemon threads end with the process).
        deadline = time.monotonic() + 1.0
        for thread in _THREADS:
            thread.join(max(0.0, deadline - time.monotonic()))
    finally:
        hooks = _worker._HOOKS
        if hooks is not None:
            hooks.worker.alive = False
            hooks.call("worker_exit", hooks.server, hooks.worker, fatal=False)
        sys.stdout.flush()
        sys.stderr.flush()
