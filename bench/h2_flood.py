#!/usr/bin/env python3
# An HTTP/2 flood of one payload-free frame kind beside a stream held open.
# usage: bench/h2_flood.py PORT KIND SECONDS  (KIND: wu, prio, rst, pingack)
# Reconnects after each GOAWAY until SECONDS pass; prints per-connection time to GOAWAY.
import socket, struct, sys, threading, time
def frame(t, f, s, p): return struct.pack('>I', len(p))[1:] + bytes([t, f]) + struct.pack('>I', s) + p
port, kind, secs = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
one = {'wu': frame(8, 0, 1, struct.pack('>I', 1)), 'prio': frame(2, 0, 3, b'\0\0\0\1\x10'),
       'rst': frame(3, 0, 3, b'\0\0\0\x08'), 'pingack': frame(6, 1, 0, b'notasked')}[kind]
batch = one * (65536 // len(one))
head = b'\x83\x86\x04\x05/echo\x01\x04host'
get3 = frame(1, 5, 3, b'\x82\x86\x04\x05/echo\x01\x04host')
end = time.time() + secs
results = []
while time.time() < end:
    s = socket.create_connection(('127.0.0.1', port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' + frame(4, 0, 0, b'') + frame(4, 1, 0, b'') + frame(1, 4, 1, head) + get3)
    t0 = time.time(); got = {}
    def reader():
        buf = b''
        while True:
            try: d = s.recv(1 << 16)
            except OSError: break
            if not d: break
            buf += d
            while len(buf) >= 9:
                l = int.from_bytes(buf[:3], 'big')
                if len(buf) < 9 + l: break
                if buf[3] == 7 and 'goaway' not in got:
                    got['goaway'] = (time.time() - t0, int.from_bytes(buf[13:17], 'big'))
                buf = buf[9 + l:]
        got['closed'] = time.time() - t0
    th = threading.Thread(target=reader, daemon=True); th.start()
    sent = 0
    s.settimeout(1.0)
    while 'goaway' not in got and 'closed' not in got and time.time() < end:
        try: s.sendall(batch); sent += len(batch) // len(one)
        except OSError: break
    th.join(2)
    results.append((got.get('goaway'), sent))
    s.close()
n = len(results)
times = sorted(r[0][0] for r in results if r[0])
codes = set(r[0][1] for r in results if r[0])
print(f"{kind}: {n} connections in {secs}s, GOAWAY codes {codes}, time to GOAWAY median {times[len(times)//2]*1000:.1f} ms max {times[-1]*1000:.1f} ms, frames written per connection (incl. socket buffers) median {sorted(r[1] for r in results)[n//2]}" if times else f"{kind}: no GOAWAY, {results}")
