"""The app of bench/preload.sh: a FastAPI app that makes about 60 MB of Python objects
at import (a catalogue held in memory, as apps load models, tables, configuration), so
that what preloading shares between workers shows. GET / answers its VERSION (the
bench rewrites it on disk for the HUP measure) and the worker's pid. Each worker's
lifespan startup writes the time it finished to ready-PID in READY_DIR: that is when
the worker serves (the bench measures start times from it, for any server)."""

import os
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI

VERSION = 1

# About 60 MB (tracemalloc, CPython 3.11): 140,000 small dicts with their strings.
ROWS = [
    {"id": i, "name": f"item-{i:07d}", "price": i * 0.5, "tags": ["sale", str(i % 97)]}
    for i in range(140_000)
]


@asynccontextmanager
async def lifespan(app):
    ready_dir = os.environ.get("READY_DIR")
    if ready_dir:
        with open(os.path.join(ready_dir, f"ready-{os.getpid()}"), "w") as f:
            f.write(repr(time.time()))
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def root():
    return {"version": VERSION, "pid": os.getpid(), "rows": len(ROWS)}
