#!/usr/bin/env python3
"""Runs uvicorn on an inherited TCP listener with TCP_NODELAY set on it first.

    uvicorn_nodelay.py app:app --fd 3 [uvicorn options...]

`uvicorn --fd N` wraps the fd as an AF_UNIX socket whatever it really is, so its event
loop never sets TCP_NODELAY on the TCP connections it accepts. Its responses go out in
two writes (head, then body), and on a keep-alive connection Nagle's algorithm holds the
second until the client's delayed ACK, about 40 ms per request. On Linux an accepted
socket inherits TCP_NODELAY from its listener, so setting it once on the listener (fd 3,
shared by every worker) avoids that. The benchmark runs uvicorn with and without it.
"""
import os
import socket
import sys

listener = socket.socket(fileno=3)  # the family is read from the fd itself
if listener.family in (socket.AF_INET, socket.AF_INET6):
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
listener.detach()  # fd 3 stays open for uvicorn
os.execv(sys.executable, [sys.executable, "-m", "uvicorn", *sys.argv[1:]])
