"""The Python half of a forkd worker serving an ASGI app (the Rust half is forkd._native;
a WSGI app is ``_wsgi``'s once imported).

Runs in the worker process after the fork, on its main thread: ``boot`` sends print and
stderr lines to forkd's error log, installs ``Handler`` (Python ``logging`` records as
forkd's own records) on the root logger, applies ``[python] log_config``, arms
faulthandler for the master's SIGABRT (``timeout``), puts ``[python] path`` first on
``sys.path``, makes the event loop (uvloop when installed), imports the app and runs the
lifespan startup; ``run`` runs the loop until forkd's drain is over, then the lifespan
shutdown; ``handle`` runs the app for one request.
"""

import asyncio
import faulthandler
import gc
import importlib
import io
import json
import logging
import logging.config
import os
import runpy
import signal
import sys
import threading
import time
import traceback
import types

from forkd import _native, _wsgi


class BootError(Exception):
    """The app cannot be served: the worker fails to boot with this message."""


class _LineWriter(io.TextIOBase):
    """A text stream that sends each complete line to forkd's error log."""

    def __init__(self, stderr, name):
        self._stderr = stderr
        self._name = name
        self._partial = ""

    @property
    def name(self):
        return self._name

    @property
    def encoding(self):
        return "utf-8"

    def writable(self):
        return True

    def isatty(self):
        return False

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            _native.log_line(self._stderr, line.rstrip("\r"))
        return len(text)

    def flush(self):
        if self._partial:
            _native.log_line(self._stderr, self._partial)
            self._partial = ""


class Handler(logging.Handler):
    """Hands each ``logging`` record to forkd's error log as one record: its level
    (CRITICAL/ERROR -> error, WARNING -> warn, INFO -> info, DEBUG -> debug, lower ->
    trace), its logger's name (``logger``), its message (``record.getMessage()``: forkd
    writes the time, level and pid itself, so a formatter set on this handler only
    formats the traceback) and its traceback and stack as one field (``exc_info``).

    forkd installs one on the root logger of every worker; a ``[python] log_config``
    may name it too: ``{"class": "forkd._worker.Handler"}``.
    """

    def emit(self, record):
        try:
            message = record.getMessage()
            trace = None
            if record.exc_info:
                trace = (self.formatter or _FORMATTER).formatException(record.exc_info)
            elif record.exc_text:
                trace = record.exc_text
            if record.stack_info:
                stack = _FORMATTER.formatStack(record.stack_info)
                trace = f"{trace}\n{stack}" if trace else stack
            try:
                _native.log_record(record.levelno, record.name, message, trace)
            except UnicodeEncodeError:
                # A lone surrogate (bytes decoded with surrogateescape) is no UTF-8.
                _native.log_record(record.levelno, _utf8(record.name), _utf8(message), trace and _utf8(trace))
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own convention
            self.handleError(record)


_FORMATTER = logging.Formatter()


def _utf8(text):
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _setup_logging(root_level, log_config):
    """Python's ``logging`` into forkd's log, then the app's own ``log_config``.

    forkd's handler goes on the root logger unless the root logger has handlers already
    (someone configured logging before the worker booted); its level is forkd's
    ``log.level``, so that a record forkd would drop is not formatted. An app that calls
    ``logging.basicConfig()`` at import finds the root configured, so that call does
    nothing (``basicConfig(force=True)`` replaces forkd's handler, as ``log_config``
    does when it configures the root logger). Loggers with their own handlers (uvicorn's,
    gunicorn's style) keep them; their records reach forkd's handler as well unless they
    set ``propagate = False``.
    """
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(Handler())
    root.setLevel(root_level)
    if log_config:
        _apply_log_config(log_config)


def _apply_log_config(spec):
    """``[python] log_config``: a dictConfig dict from a JSON file (a path ending in
    ``.json``) or a ``module:attr``; any error is the worker's boot failure."""
    if spec.endswith(".json") or ":" not in spec:
        try:
            with open(spec, encoding="utf-8") as f:
                config = json.load(f)
        except OSError as exc:
            raise BootError(f"log_config: cannot read {spec!r}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise BootError(f"log_config: {spec!r} is not valid JSON: {exc}") from None
    elif ".py:" in spec:
        # A Gunicorn config file's logconfig_dict: "/path/gunicorn.conf.py:logconfig_dict".
        path, _, attr = spec.rpartition(":")
        try:
            config = _run_config_file(path)[attr]
        except KeyError:
            raise BootError(f"log_config: {path} sets no {attr}") from None
    else:
        module_name, _, attr = spec.partition(":")
        try:
            config = importlib.import_module(module_name)
            for part in attr.split("."):
                config = getattr(config, part)
        except ImportError as exc:
            raise BootError(f"log_config: cannot import module {module_name!r} (from {spec!r}): {exc}") from None
        except AttributeError:
            raise BootError(f"log_config: module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(config, dict):
        raise BootError(f"log_config: {spec!r} is a {type(config).__name__}, not a dict")
    try:
        logging.config.dictConfig(config)
    except Exception as exc:  # noqa: BLE001 - dictConfig raises ValueError, TypeError, ...
        cause = exc.__cause__
        detail = f"{exc}: {cause}" if cause is not None else str(exc)
        raise BootError(f"log_config {spec!r}: logging.config.dictConfig failed: {detail}") from None


_CONFIG_FILE = {}


def _run_config_file(path):
    """A Gunicorn config file's names, executed once per worker (after the fork: the
    master runs none of its code)."""
    if path not in _CONFIG_FILE:
        try:
            _CONFIG_FILE[path] = runpy.run_path(path, run_name="__config__")
        except BaseException as exc:  # noqa: BLE001 - the file's error is the boot failure
            raise BootError(f"{path}: {type(exc).__name__}: {exc}") from None
    return _CONFIG_FILE[path]


class _Config:
    """``server.cfg`` / ``worker.cfg``: the config file's settings as attributes (a
    setting the file does not set is None), not Gunicorn's Config object."""

    def __init__(self, names):
        for name, value in names.items():
            if not name.startswith("_") and not callable(value):
                setattr(self, name, value)

    def __getattr__(self, name):
        return None


class _Server:
    """``server`` in Gunicorn's hooks: ``pid`` (the master's), ``cfg``, ``log``."""

    def __init__(self, cfg, log):
        self.pid = os.getppid()
        self.cfg = cfg
        self.log = log


class _WorkerInfo:
    """``worker`` in Gunicorn's hooks: ``pid``, ``ppid``, ``age`` (forkd: seconds since
    the worker started, not Gunicorn's spawn counter), ``alive``, ``cfg``, ``log``."""

    def __init__(self, cfg, log):
        self.pid = os.getpid()
        self.ppid = os.getppid()
        self.started = time.monotonic()
        self.alive = True
        self.cfg = cfg
        self.log = log

    @property
    def age(self):
        return time.monotonic() - self.started


class _Hooks:
    """A Gunicorn config file's worker-side server hooks (``post_fork``,
    ``post_worker_init``, ``worker_int``, ``worker_abort``, ``worker_exit``), called with
    forkd's ``server`` and ``worker`` objects. An error in ``post_fork`` or
    ``post_worker_init`` is the worker's boot failure, as in Gunicorn; one in the
    others is logged."""

    def __init__(self, path, specs):
        self.names = dict(_run_config_file(path)) if path else {}
        for name, spec in specs:
            self.names[name] = _import_hook(name, spec)
        log = logging.getLogger("forkd.hooks")
        cfg = _Config(self.names)
        self.server = _Server(cfg, log)
        self.worker = _WorkerInfo(cfg, log)

    def has(self, name):
        return callable(self.names.get(name))

    def call(self, name, *args, fatal=True):
        hook = self.names.get(name)
        if not callable(hook):
            return
        try:
            hook(*args)
        except BaseException as exc:  # noqa: BLE001 - reported as the hook's failure
            if fatal:
                _asgi_log().error("server hook %s raised", name, exc_info=exc)
                raise BootError(f"server hook {name} raised {type(exc).__name__}: {exc}") from None
            logging.getLogger("forkd.hooks").error("server hook %s raised", name, exc_info=exc)


_HOOKS = None


def _import_hook(name, spec):
    """A ``[python.hooks]`` entry: ``module:function``, imported after ``sys.path`` is set."""
    module_name, _, attr = spec.partition(":")
    try:
        target = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except ImportError as exc:
        raise BootError(f"[python.hooks] {name}: cannot import module {module_name!r}: {exc}") from None
    except AttributeError:
        raise BootError(f"[python.hooks] {name}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise BootError(f"[python.hooks] {name}: {spec!r} is not callable")
    return target


def _arm_faulthandler():
    """When ``timeout`` finds the loop blocked, the master sends SIGABRT (then SIGKILL
    a second later): faulthandler's C handler writes the Python stack of every thread
    to fd 2, which in a worker is the error log (its file, when there is one), then the
    default action aborts the worker. It runs in the signal handler, so a thread
    blocked in C or in a busy loop is shown too. (``register`` refuses SIGABRT, a fatal
    signal: ``enable`` covers it, and SIGSEGV, SIGFPE, SIGBUS and SIGILL with it.) The
    dump is faulthandler's own plain lines, in JSON log format too."""
    try:
        faulthandler.enable(file=2, all_threads=True)
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"faulthandler: cannot arm the stack dump on SIGABRT: {exc}", file=sys.stderr)


def _arm_worker_abort():
    """``worker_abort``: run when ``timeout`` aborts the worker (SIGABRT), after
    faulthandler's stack dump. faulthandler's C handler dumps the stacks, then calls the
    handler that was there before it: Python's, set here first, which runs
    ``_on_abort`` on the main thread at its next chance (a ``time.sleep`` is cut short; a
    call blocked in C never returns, and the master's SIGKILL a second later ends it)."""
    faulthandler.disable()
    signal.signal(signal.SIGABRT, _on_abort)
    _arm_faulthandler()


def _on_abort(signum, frame):
    _HOOKS.worker.alive = False
    _HOOKS.call("worker_abort", _HOOKS.worker, fatal=False)
    sys.stdout.flush()
    sys.stderr.flush()
    # As without the hook: the worker ends by SIGABRT.
    signal.signal(signal.SIGABRT, signal.SIG_DFL)
    os.abort()


def _hook_defined(name):
    return _HOOKS is not None and _HOOKS.has(name)


def interrupted():
    """``worker_int``: forkd's server thread calls this (on a thread of its own, for at
    most a second) when the worker is told to stop at once (QUIT or INT), before it
    exits."""
    if _HOOKS is not None and _HOOKS.has("worker_int"):
        _HOOKS.worker.alive = False
        _HOOKS.call("worker_int", _HOOKS.worker, fatal=False)
        sys.stdout.flush()
        sys.stderr.flush()


def _asgi_log():
    # Asked for when needed, not at import: a log_config with disable_existing_loggers
    # would disable a logger that existed before it.
    return logging.getLogger("forkd.asgi")


def _load(spec):
    module_name, _, attr = spec.partition(":")
    factory = attr.endswith("()")
    if factory:
        attr = attr[:-2]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise BootError(f"cannot import module {module_name!r} (from {spec!r}): {exc}") from exc
        raise
    app = module
    for part in attr.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            hint = _app_candidates(module, module_name) if app is module else ""
            raise BootError(f"module {module_name!r} has no attribute {attr!r} (from {spec!r}){hint}") from None
    if factory:
        app = app()
    if not callable(app):
        raise BootError(f"{spec!r} is not callable (an ASGI or WSGI app is)")
    return app


# Callable objects a module has that are no app (typing.Optional, a functools.partial...).
_NOT_APPS = {"builtins", "typing", "typing_extensions", "functools", "collections", "operator"}


def _app_candidates(module, module_name):
    """For a missing attribute: the module's app-like objects (callable instances, such as
    a FastAPI, Flask or Django application), as ``MODULE:NAME`` to use instead."""
    found = [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and callable(value)
        and not isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType))
        and type(value).__module__.partition(".")[0] not in _NOT_APPS
    ]
    if not found:
        return ""
    return "; did you mean " + " or ".join(repr(f"{module_name}:{name}") for name in sorted(found)[:3]) + "?"
_PRELOADED = None


def preload(spec, env, paths, root_level=20, log_config=""):
    """``preload_app``: imports the app in the generation's zygote, once, before any
    worker is forked from it; each worker's ``boot`` then takes it (``_preloaded_or_load``).

    The collector is off during the import and what it made is ``gc.freeze()``-d (moved
    to a generation the collector never scans), so that no collection in a worker
    writes to the shared pages (copy-on-write would copy them); each worker turns the
    collector on again. An import that left a thread running or an event loop open is
    refused: a fork copies a thread's locks but not the thread, and a loop's selector,
    self-pipe and callbacks half-way, so every worker would start broken. Those belong
    in the lifespan startup or a ``post_fork`` hook.
    """
    global _PRELOADED
    os.environ.update(env)
    sys.stdout = _LineWriter(False, "<stdout>")
    sys.stderr = _LineWriter(True, "<stderr>")
    for path in reversed(paths):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
    _setup_logging(root_level, log_config)
    gc.disable()
    try:
        app = _load(spec)
    except BootError:
        raise
    except BaseException as exc:
        _asgi_log().error("cannot load %s", spec, exc_info=exc)
        raise
    found = _fork_hazards()
    if found:
        raise BootError(
            f"preload_app: importing {spec!r} started {' and '.join(found)}; forking a process with those "
            "copies them half-way into every worker: start them in the lifespan startup or a post_fork hook, "
            "or set preload_app = false"
        )
    gc.freeze()
    _PRELOADED = (spec, app)


def _fork_hazards():
    """What an import left behind that a fork cannot copy whole: threads, event loops."""
    found = []
    threads = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if threads:
        names = ", ".join(repr(t.name) for t in threads)
        found.append(f"{len(threads)} thread(s) ({names})")
    loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and not o.is_closed()]
    if loops:
        kinds = ", ".join(sorted({f"{type(o).__module__}.{type(o).__qualname__}" for o in loops}))
        found.append(f"{len(loops)} event loop(s) not closed ({kinds})")
    return found


def _preloaded_or_load(spec):
    """The app the zygote imported (``preload_app``), or the app imported now."""
    global _PRELOADED
    if _PRELOADED is not None and _PRELOADED[0] == spec:
        app = _PRELOADED[1]
        _PRELOADED = None
        gc.enable()
        return app
    return _load(spec)


class _Lifespan:
    """ASGI lifespan 2.0: startup before the worker is ready, shutdown after its drain."""

    def __init__(self, app, mode, loop):
        self.app = app
        self.mode = mode
        self.loop = loop
        self.state = {}
        self.task = None
        self.to_app = asyncio.Queue()
        self.from_app = asyncio.Queue()
        self.failure = None

    async def _main(self):
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self.to_app.get, self.from_app.put)
        except BaseException as exc:  # noqa: BLE001 - reported to the worker's boot
            self.failure = (exc, traceback.format_exc())
        finally:
            await self.from_app.put(None)

    async def startup(self):
        if self.mode == "off":
            return
        self.task = self.loop.create_task(self._main())
        await self.to_app.put({"type": "lifespan.startup"})
        reply = await self.from_app.get()
        if reply is None:
            self.task = None
            if self.mode == "auto":
                if self.failure is not None:
                    print(
                        "ASGI lifespan unsupported by the app (lifespan = \"auto\", serving without it): "
                        f"{self.failure[0]!r}",
                        file=sys.stderr,
                    )
                return
            if self.failure is not None:
                _asgi_log().error("lifespan startup failed", exc_info=self.failure[0])
                raise BootError(f"lifespan startup failed: {self.failure[0]!r}")
            raise BootError("lifespan startup failed: the app returned without answering")
        if reply.get("type") == "lifespan.startup.failed":
            message = str(reply.get("message") or "")
            if "\n" in message.strip():
                sys.stderr.write(message if message.endswith("\n") else message + "\n")
                message = message.strip().splitlines()[-1]
            raise BootError(f"lifespan startup failed: {message or 'no message'}")
        if reply.get("type") != "lifespan.startup.complete":
            raise BootError(f"lifespan startup: unexpected message {reply!r}")

    async def shutdown(self):
        if self.task is None:
            return
        await self.to_app.put({"type": "lifespan.shutdown"})
        reply = await self.from_app.get()
        if reply is not None and reply.get("type") == "lifespan.shutdown.failed":
            print(f"lifespan shutdown failed: {reply.get('message')}", file=sys.stderr)
        elif reply is None and self.failure is not None:
            _asgi_log().error("lifespan shutdown failed", exc_info=self.failure[0])
        try:
            await asyncio.wait_for(self.task, 5)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            pass


def _new_loop():
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def boot(
    spec,
    env,
    paths,
    lifespan_mode,
    progress_every,
    root_level=20,
    log_config="",
    hooks_file="",
    hook_specs=(),
    interface="auto",
):
    """Imports the app and runs its startup; returns (loop, app, lifespan, state, stopped),
    or (None, app, None, None, None) for a WSGI app (``forkd._wsgi``; ``interface``:
    ``[python] interface``). ``hooks_file``: a Gunicorn config file whose worker hooks
    run here; ``hook_specs``: ``[python.hooks]`` as (name, "module:function") pairs,
    over the file's."""
    global _HOOKS
    os.environ.update(env)
    sys.stdout = _LineWriter(False, "<stdout>")
    sys.stderr = _LineWriter(True, "<stderr>")
    _arm_faulthandler()
    # forkd's server thread handles the worker's signals; the interpreter's own SIGINT
    # handler would raise KeyboardInterrupt in the app instead.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    for path in reversed(paths):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
    # After sys.path: a "module:attr" log_config is imported like the app.
    _setup_logging(root_level, log_config)
    _HOOKS = _Hooks(hooks_file, hook_specs)
    if _HOOKS.has("worker_abort"):
        _arm_worker_abort()
    _HOOKS.call("post_fork", _HOOKS.server, _HOOKS.worker)
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    try:
        app = _preloaded_or_load(spec)
        if _wsgi.interface(app, interface, spec, BootError) == "wsgi":
            asyncio.set_event_loop(None)
            loop.close()
            _HOOKS.call("post_worker_init", _HOOKS.worker)
            return None, app, None, None, None
        lifespan = _Lifespan(app, lifespan_mode, loop)
        loop.run_until_complete(lifespan.startup())
    except BootError:
        raise
    except BaseException as exc:
        _asgi_log().error("cannot load %s", spec, exc_info=exc)
        raise
    _HOOKS.call("post_worker_init", _HOOKS.worker)

    def tick():
        _native.stamp()
        loop.call_later(progress_every, tick)

    tick()
    stopped = loop.create_future()
    return loop, app, lifespan, lifespan.state, stopped


def run(loop, lifespan, stopped):
    """Runs the loop until forkd's drain is over, then the lifespan shutdown."""

    async def main():
        await stopped
        await lifespan.shutdown()

    try:
        loop.run_until_complete(main())
    finally:
        if _HOOKS is not None:
            _HOOKS.worker.alive = False
            _HOOKS.call("worker_exit", _HOOKS.server, _HOOKS.worker, fatal=False)
        sys.stdout.flush()
        sys.stderr.flush()


async def handle(app, scope, conn):
    """Runs the app for one request; an exception is logged, and answered by the bridge."""
    try:
        await app(scope, conn.receive, conn.send)
    except BaseException as exc:  # noqa: BLE001 - the worker lives on
        if conn.disconnected:
            # The client went away and `send` raised OSError (spec 2.4), which the app
            # may have turned into its own exception (Starlette's ClientDisconnect):
            # routine, not worth a traceback.
            print(
                f"client gone during {scope.get('method', 'WEBSOCKET')} {scope['path']}; "
                f"the app ended with {type(exc).__name__}"
            )
        else:
            # One record, the traceback in it (as uvicorn's "uvicorn.error" does).
            _asgi_log().error(
                "Exception in ASGI application (%s %s)",
                scope.get("method", "WEBSOCKET"),
                scope["path"],
                exc_info=exc,
            )
        conn.failed()
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
    else:
        conn.finished()
