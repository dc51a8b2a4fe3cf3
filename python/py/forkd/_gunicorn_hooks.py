"""The master-side server hooks of a Gunicorn config file (``on_starting``,
``when_ready``, ``on_reload``, ``pre_fork``, ``child_exit``, ``nworkers_changed``,
``on_exit``), run in a long-lived child of forkd's master so that no code of the file
runs in the master: ``python -m forkd._gunicorn_hooks FILE``. The master writes one JSON
object a line to stdin (``{"hook": NAME, "pid": N, "age": N, "new": N, "old": N}``) and
never waits for an answer; each hook runs here in order, bounded by ``FORKD_HOOK_TIMEOUT``
seconds (an alarm: a hook that overruns is interrupted and logged). Its ``logging``
records (``server.log``), prints and errors are records of forkd's error log, written by
this process as the master writes its own (same file, format and level, from
``FORKD_LOG_*``); an error is logged, never fatal. ``on_reload`` executes the file again first,
so the hooks of the edited file run from then on. At end of input (the master exited)
this process ends.

``python -m forkd._gunicorn_hooks FILE [NAME=module:function ...]``: FILE is ``-`` for
none; the ``[python.hooks]`` entries are imported with ``FORKD_HOOK_PATH`` (``python.path``)
first on ``sys.path``."""

import importlib
import json
import logging
import os
import runpy
import signal
import sys


class _Config:
    """``server.cfg``: the file's settings as attributes (an unset one reads as None)."""

    def __init__(self, names):
        for name, value in names.items():
            if not name.startswith("_") and not callable(value):
                setattr(self, name, value)

    def __getattr__(self, name):
        return None


class _Server:
    """``server``: ``pid`` (the master's), ``cfg``, ``log``, ``num_workers`` (as of the
    last ``nworkers_changed``)."""

    def __init__(self, cfg, log):
        self.pid = os.getppid()
        self.cfg = cfg
        self.log = log
        self.num_workers = cfg.workers


class _Worker:
    """``worker`` of ``pre_fork`` / ``child_exit``: ``pid`` (0 before the fork), ``age``
    (forkd's worker number, which rises with each worker started, as Gunicorn's age)."""

    def __init__(self, pid, age, cfg, log):
        self.pid = pid
        self.age = age
        self.cfg = cfg
        self.log = log


class _Overran(Exception):
    pass


def _alarm(signum, frame):
    raise _Overran()


_LOG = logging.getLogger("forkd.hooks")


def _say(text, exc=None):
    _LOG.error("%s", text, exc_info=exc)


def _setup_logging():
    """forkd's error log in this process (``forkd._native``), Python's ``logging`` and
    prints into it as the workers' are; plain lines on stderr if that cannot be had."""
    try:
        from forkd import _native
        from forkd._worker import Handler, _LineWriter

        root_level = _native.init_runner_log()
    except Exception as exc:  # noqa: BLE001 - the hooks still run, logging plainly
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        _LOG.warning("hook runner: forkd's error log unavailable (%s); plain lines on stderr", exc)
        return
    root = logging.getLogger()
    root.addHandler(Handler())
    root.setLevel(root_level)
    sys.stdout = _LineWriter(False, "<stdout>")
    sys.stderr = _LineWriter(True, "<stderr>")
    signal.signal(signal.SIGUSR1, lambda signum, frame: _native.reopen_logs())


def main(argv):
    path = argv[1]
    specs = [arg.partition("=")[::2] for arg in argv[2:]]
    for entry in reversed([p for p in os.environ.get("FORKD_HOOK_PATH", "").split(os.pathsep) if p]):
        sys.path.insert(0, entry)
    timeout = max(1, int(os.environ.get("FORKD_HOOK_TIMEOUT", "30")))
    _setup_logging()
    log = _LOG
    signal.signal(signal.SIGALRM, _alarm)
    # The master's signals to its process group are not for this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def load():
        try:
            names = dict(runpy.run_path(path, run_name="__config__")) if path != "-" else {}
        except BaseException as exc:  # noqa: BLE001 - reported, the old hooks stay
            _say(f"hook runner: cannot execute {path}: {type(exc).__name__}: {exc}")
            return None
        for name, spec in specs:
            module_name, _, attr = spec.partition(":")
            try:
                target = importlib.import_module(module_name)
                for part in attr.split("."):
                    target = getattr(target, part)
                names[name] = target
            except Exception as exc:  # noqa: BLE001 - reported, that hook is not run
                _say(f"[python.hooks] {name}: cannot import {spec!r}: {type(exc).__name__}: {exc}")
        return names

    names = load() or {}
    server = _Server(_Config(names), log)
    for line in sys.stdin:
        try:
            call = json.loads(line)
        except ValueError:
            continue
        hook = call.get("hook", "")
        if hook == "on_reload":
            names = load() or names
            server.cfg = _Config(names)
        function = names.get(hook)
        if not callable(function):
            continue
        if hook in ("pre_fork", "child_exit"):
            args = (server, _Worker(call.get("pid", 0), call.get("age", 0), server.cfg, log))
        elif hook == "nworkers_changed":
            server.num_workers = call.get("new")
            args = (server, call.get("new"), call.get("old"))
        else:
            args = (server,)
        signal.alarm(timeout)
        try:
            function(*args)
        except _Overran:
            _say(f"server hook {hook} ran longer than {timeout}s and was interrupted")
        except BaseException as exc:  # noqa: BLE001 - a hook's error is logged, never fatal
            _say(f"server hook {hook} raised {type(exc).__name__}: {exc}", exc)
        finally:
            signal.alarm(0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
