"""The FastAPI app of tests/all/python.rs. The tests copy it to a temporary directory and
serve it with the `forkd` command of the test virtualenv; the HUP test rewrites VERSION."""

import asyncio
import logging
import os
import time
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

VERSION = 1


@asynccontextmanager
async def lifespan(app):
    if os.environ.get("APP_FAIL_STARTUP"):
        raise RuntimeError("database is down")
    yield {"greeting": "hello from lifespan"}
    print("lifespan shutdown ran")


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def root():
    return {"version": VERSION, "pid": os.getpid()}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: Optional[str] = None):
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(item: dict):
    return {"received": item}


@app.get("/stream")
async def stream():
    async def chunks():
        for i in range(5):
            yield f"chunk {i}\n"
            await asyncio.sleep(0.01)

    return StreamingResponse(chunks(), media_type="text/plain")


STREAM_CLOSED = {"closed": False}


@app.get("/forever")
async def forever():
    async def ticks():
        try:
            while True:
                yield "data: tick\n\n"
                await asyncio.sleep(0.02)
        finally:
            STREAM_CLOSED["closed"] = True

    return StreamingResponse(ticks(), media_type="text/event-stream")


@app.get("/forever/closed")
async def forever_closed():
    return STREAM_CLOSED


@app.get("/download")
async def download(mb: int):
    chunk = b"z" * 65536

    async def chunks():
        for _ in range(mb * 16):
            yield chunk

    return StreamingResponse(chunks(), media_type="application/octet-stream")


@app.get("/rss")
async def rss():
    return {"rss_kib": rss_kib()}


LEAKED = []


@app.get("/leak")
async def leak(kb: int):
    # Kept for the life of the worker, written to so that it is resident: a leak on
    # purpose, for the max_worker_memory test.
    LEAKED.append(b"\xa5" * (kb * 1024))
    return {"leaked_kib": kb * len(LEAKED)}


@app.get("/boom")
async def boom():
    raise ValueError("kaboom")


@app.get("/state")
async def state(request: Request):
    return {"greeting": request.state.greeting}


@app.get("/scope/{rest:path}")
async def scope(request: Request):
    s = request.scope
    return {
        "type": s["type"],
        "asgi": s["asgi"],
        "http_version": s["http_version"],
        "method": s["method"],
        "scheme": s["scheme"],
        "path": s["path"],
        "raw_path": s["raw_path"].decode("latin-1"),
        "query_string": s["query_string"].decode("latin-1"),
        "root_path": s["root_path"],
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in s["headers"]],
        "client": list(s["client"]) if s["client"] else None,
        "server": list(s["server"]) if s["server"] else None,
    }


@app.get("/env")
async def env():
    return {"APP_ENV": os.environ.get("APP_ENV")}


@app.get("/print")
async def print_something():
    print("hello from print")
    logging.getLogger("fastapi_app").warning("hello from logging")
    return {"printed": True}


@app.get("/log")
async def log_each_level():
    log = logging.getLogger("app.db")
    log.debug("debug from app.db")
    log.info("info from app.db")
    log.warning("warning from app.db")
    log.error("error from app.db")
    log.critical("critical from app.db")
    try:
        {}["missing"]
    except KeyError:
        log.exception("caught from app.db")
    log.warning("surrogate \udcff from app.db")
    return {"logged": True}


@app.get("/slow")
async def slow(seconds: float):
    await asyncio.sleep(seconds)
    print(f"slow request done after {seconds}s")
    return {"slept": seconds}


@app.get("/block")
async def block(seconds: float):
    time.sleep(seconds)
    return {"blocked": seconds}


def rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@app.post("/upload")
async def upload(request: Request):
    received = 0
    peak = rss_kib()
    async for chunk in request.stream():
        received += len(chunk)
        peak = max(peak, rss_kib())
    return {"bytes": received, "peak_rss_kib": peak}


@app.websocket("/ws")
async def echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            if text == "bye":
                await websocket.close(code=4000)
                return
            await websocket.send_text(f"echo: {text} ({websocket.state.greeting})")
    except WebSocketDisconnect as gone:
        print(f"websocket closed by the client with code {gone.code}")


@app.websocket("/ws-deaf")
async def deaf(websocket: WebSocket):
    # Accepts, then never receives: what the client sends must wait in the socket.
    await websocket.accept()
    await asyncio.sleep(60)


@app.websocket("/ws-flood")
async def flood(websocket: WebSocket):
    await websocket.accept()
    message = b"w" * 60000
    for _ in range(2000):
        await websocket.send_bytes(message)
    await websocket.close()
