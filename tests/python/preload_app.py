"""The app of tests/all/preload.rs (`preload_app`): a plain ASGI app that counts its
imports (one line per import, the importing pid, in imports.txt beside it) and answers
with its VERSION (the tests rewrite it on disk) and the worker's pid. With
APP_START_THREAD set, its import starts a thread, which the zygote must refuse; with
APP_FAIL_STARTUP, its lifespan startup (in each worker) fails; APP_SLOW_IMPORT=SECONDS
makes its import take that long; APP_MAKE_LOOP makes an event loop at import, which
the zygote must refuse too."""

import json
import os
import threading
import time

VERSION = 1

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "imports.txt"), "a") as _counter:
    _counter.write(f"{os.getpid()}\n")

if os.environ.get("APP_SLOW_IMPORT"):
    time.sleep(float(os.environ["APP_SLOW_IMPORT"]))

if os.environ.get("APP_MAKE_LOOP"):
    import asyncio

    LOOP = asyncio.new_event_loop()

if os.environ.get("APP_START_THREAD"):
    threading.Thread(target=time.sleep, args=(3600,), name="metrics-pusher", daemon=True).start()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup" and os.environ.get("APP_FAIL_STARTUP"):
                await send({"type": "lifespan.startup.failed", "message": "cache is down"})
                return
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = json.dumps({"version": VERSION, "pid": os.getpid()}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
