"""An exec worker for the release-symlink test, standard library only: it serves on fd 3
and answers every GET with the `release.txt` it finds in its working directory at start
and that directory ("r1 /tmp/.../releases/r1"). On TERM it finishes the request it is
in, then exits."""
import os
import signal
import socket
from http.server import BaseHTTPRequestHandler, HTTPServer

RELEASE = open("release.txt").read().strip()
ANSWER = f"{RELEASE} {os.getcwd()}\n".encode()
stopping = False


def stop(_signum, _frame):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, format, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
server.socket.close()
server.socket = socket.socket(fileno=3)
# Non-blocking: a worker that loses the race for a connection goes back to its loop.
server.socket.setblocking(False)
server.timeout = 0.05
while not stopping:
    server.handle_request()
