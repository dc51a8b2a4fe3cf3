"""Server hooks named in forkd.toml's [python.hooks] (tests/all/python.rs): each writes
a file named after the hook and a pid into the directory in HOOKS_DIR."""

import os


def _touch(name, pid):
    open(os.path.join(os.environ["HOOKS_DIR"], "%s-%d" % (name, pid)), "w").close()


def post_fork(server, worker):
    _touch("post_fork", worker.pid)


def worker_exit(server, worker):
    _touch("worker_exit", worker.pid)


def when_ready(server):
    _touch("when_ready", server.pid)
