"""Reads a Gunicorn config file (``forkd -c gunicorn.conf.py``) as Gunicorn does: the
file is executed and its module-level names are the settings. forkd's master runs this
module in a short-lived child (``python -m forkd._gunicorn_config FILE``) so that no
code of the file runs in the master; the settings go back as one JSON object on stdout:

    {"settings": {NAME: VALUE, ...}, "hooks": [NAME, ...], "skipped": [NAME, ...]}

``settings``: every public name bound to plain data (None, bool, int, float, str, and
lists, tuples and dicts of those); ``hooks``: the names bound to callables (Gunicorn's
server hooks among them); ``skipped``: other public names (a class instance, say), which
forkd cannot take. Modules and names starting with ``_`` are left out, as Gunicorn
ignores them. An error in the file exits 1 with the Python error on stderr."""

import json
import runpy
import sys
import traceback
import types


def _plain(value, depth=0):
    if depth > 20:
        raise TypeError("nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    raise TypeError(type(value).__name__)


def read(path):
    """The file's settings, hooks and skipped names (see the module docs)."""
    namespace = runpy.run_path(path, run_name="__config__")
    settings, hooks, skipped = {}, [], []
    for name, value in namespace.items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if callable(value):
            hooks.append(name)
            continue
        try:
            settings[name] = _plain(value)
        except TypeError:
            skipped.append(name)
    return {"settings": settings, "hooks": sorted(hooks), "skipped": sorted(skipped)}


def main(argv):
    if len(argv) != 2:
        print("usage: python -m forkd._gunicorn_config FILE", file=sys.stderr)
        return 2
    path = argv[1]
    try:
        result = read(path)
    except SystemExit as exc:
        print(f"the file called exit({exc.code!r})", file=sys.stderr)
        return 1
    except BaseException as exc:  # noqa: BLE001 - any error of the file is reported
        last = traceback.extract_tb(exc.__traceback__)
        where = next((f for f in reversed(last) if f.filename == path), None)
        if isinstance(exc, SyntaxError) and exc.lineno:
            detail = f"line {exc.lineno}: SyntaxError: {exc.msg}"
        elif where is not None:
            detail = f"line {where.lineno}: {type(exc).__name__}: {exc}"
        else:
            detail = f"{type(exc).__name__}: {exc}"
        print(detail, file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
