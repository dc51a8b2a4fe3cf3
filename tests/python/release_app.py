"""A raw ASGI app for the release-symlink test: it answers every request with the
`release.txt` beside it, read when it is imported, and its working directory."""
import os
from pathlib import Path

RELEASE = (Path(__file__).parent / "release.txt").read_text().strip()
ANSWER = f"{RELEASE} {os.getcwd()}\n".encode()


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": ANSWER})
