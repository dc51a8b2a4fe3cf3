"""An exec worker written with Python's standard library only, for the tests of
`ready = "notify"` and `timeout`: it takes its socket from LISTEN_FDS (fd 3), waits
READY_DELAY seconds before it sends READY=1, then sends WATCHDOG=1 every half
WATCHDOG_USEC from its serving loop. GET /hang blocks that loop (no more keep-alives);
GET /env describes what the process was given."""
import json
import os
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
    sys.exit("not socket-activated for this process")

OPEN_FDS = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
ADDRESS = os.environ["NOTIFY_SOCKET"]
if ADDRESS.startswith("@"):
    ADDRESS = "\0" + ADDRESS[1:]
NOTIFY = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


def notify(message):
    NOTIFY.sendto(message.encode(), ADDRESS)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/hang":
            time.sleep(60)
        if self.path == "/env":
            body = json.dumps(
                {
                    "pid": os.getpid(),
                    "open_fds_at_start": OPEN_FDS,
                    "env": {k: v for k, v in os.environ.items()},
                }
            ).encode()
        else:
            body = f"notify-worker {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
server.socket.close()
server.socket = socket.socket(fileno=3)
# Non-blocking, as every pre-fork worker's listener must be: when two workers wake for one
# connection, the one that loses the accept goes back to its loop (and its WATCHDOG=1)
# instead of blocking in accept(2) until the next connection.
server.socket.setblocking(False)
server.timeout = 0.05

time.sleep(float(os.environ.get("READY_DELAY", "1")))
print(f"sending READY=1 from {os.getpid()}", flush=True)
notify("READY=1")
interval = int(os.environ.get("WATCHDOG_USEC", "0")) / 2e6
last = 0.0
while True:
    now = time.monotonic()
    if interval and now - last >= interval:
        notify("WATCHDOG=1")
        last = now
    server.handle_request()
