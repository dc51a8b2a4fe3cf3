"""Response headers of every kind an app sends, for forkd's header reader and its caches
(tests/all/python.rs): constant names and values (the same bytes objects each time), a
value made anew per response, a value chosen among constants, and bytearrays."""

CHOICES = [b"red", b"green", b"blue"]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    n = int(scope["query_string"].decode() or "0")
    headers = [
        (b"content-type", b"text/plain"),
        (b"x-n", str(n).encode()),
        (b"x-choice", CHOICES[n % 3]),
        (bytearray(b"x-buffer"), bytearray(b"v%d" % (n % 5))),
    ]
    if n % 2:
        headers.append((b"x-odd", b"yes"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"%d" % n})
