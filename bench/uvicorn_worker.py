"""Gunicorn's UvicornWorker at its best case for the comparison: uvloop and httptools
required (not merely preferred), and uvicorn's access log off as everywhere else."""

from uvicorn.workers import UvicornWorker


class Worker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "access_log": False}
