"""Shared pieces of the forkd benchmark scripts: starting and stopping the servers under
test (each in its own session, stopped by its process group only), running wrk and
parsing its report, reading memory from /proc, reading forkd's scoreboard, and
describing the machine for bench/RESULTS.md.

Only loopback addresses are used; every wait is a poll with a deadline."""

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
# BENCH_FORKD: another forkd build to measure (not FORKD_*: forkd refuses unknown FORKD_ variables).
FORKD = os.environ.get("BENCH_FORKD") or os.path.join(ROOT, "target", "release", "forkd")
HYPER_HELLO = os.path.join(BENCH, "hyper-hello", "target", "release", "hyper-hello")
VARIANTS = os.path.join(BENCH, "variants", "target")

HELLO_BODY = b"Hello, world!"


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---- processes -------------------------------------------------------------------------

def children(pid):
    """Pids whose parent is `pid`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: parse after the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return sorted(out)


def memory_kib(pid):
    """(RSS, PSS) of a process in KiB."""
    rss = pss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """User + system CPU time used so far by these processes (all their threads)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLOCK_TICKS


def context_switches(pid):
    """Voluntary context switches of every thread of a process: how often it slept and
    was woken."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def http_get(port, path="/", timeout=2.0, host="127.0.0.1"):
    """One HTTP/1.1 request on a new connection: (status, body)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return status, body


def dechunk(body):
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


def wait_serving(port, deadline_s=10.0, path="/"):
    """Polls until the server answers 200, or raises after the deadline."""
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        try:
            status, _ = http_get(port, path, timeout=1.0)
            if status == 200:
                return
            last = f"status {status}"
        except OSError as e:
            last = str(e)
        time.sleep(0.01)
    raise RuntimeError(f"server on port {port} not serving after {deadline_s}s: {last}")


def free_port():
    """A port the OS picks, released for the server to bind (loopback only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A server under test, started in its own session so that stopping its process
    group stops exactly what this run started, workers included."""
    name: str
    port: int
    proc: subprocess.Popen
    workdir: str
    # The process that supervises the workers (or the only process, for plain hyper).
    master_pid: int = 0
    single_process: bool = False
    notes: dict = field(default_factory=dict)

    def workers(self):
        return [] if self.single_process else children(self.master_pid)

    def pids(self):
        return [self.master_pid, *self.workers()]

    def memory(self):
        """{'master': (rss, pss), 'workers': [(rss, pss), ...]} in KiB."""
        out = {"master": memory_kib(self.master_pid), "workers": []}
        for pid in self.workers():
            try:
                out["workers"].append(memory_kib(pid))
            except OSError:
                pass
        return out

    def stop(self):
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        # Whatever of this session is left (workers still draining): SIGKILL.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log(f"{self.name}: pid {self.proc.pid} did not exit after SIGKILL")


def start(name, argv, port, workdir, env=None, cwd=None, single_process=False, wait=True):
    log_path = os.path.join(workdir, f"{name}.log")
    logf = open(log_path, "wb")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                            env=env, cwd=cwd, start_new_session=True)
    server = Server(name, port, proc, workdir, master_pid=proc.pid, single_process=single_process)
    server.notes["log"] = log_path
    if wait:
        try:
            wait_serving(port)
        except RuntimeError:
            server.stop()
            with open(log_path, "rb") as f:
                tail = f.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{name} did not start; its log ends with:\n{tail}")
    return server


def start_forkd(workdir, workers=2, threads=1, binary=FORKD, app="hello", extra=(),
                name="forkd", port=None, env=None, metrics=False):
    """forkd on a free port; with metrics=True also [metrics] on another free port, for
    read_scoreboard (off otherwise: the throughput runs measure forkd without it)."""
    port = port or free_port()
    argv = [binary, "-b", f"127.0.0.1:{port}", "-w", str(workers), "--threads", str(threads),
            "--access-log", "off", "--log-level", "warn", *extra, app]
    metrics_port = None
    if metrics:
        metrics_port = free_port()
        env = dict(env if env is not None else os.environ)
        env["FORKD_METRICS_BIND"] = f"127.0.0.1:{metrics_port}"
    server = start(name, argv, port, workdir, env=env)
    server.notes["metrics_port"] = metrics_port
    return server


def start_nginx(workdir, workers=2):
    port = free_port()
    conf_dir = os.path.join(workdir, "nginx")
    os.makedirs(conf_dir, exist_ok=True)
    conf = os.path.join(conf_dir, "nginx.conf")
    with open(conf, "w") as f:
        # keepalive_requests raised from its default of 1000 so that, like the others,
        # nginx keeps each wrk connection for the whole run: its best case.
        f.write(f"""daemon off;
worker_processes {workers};
pid {conf_dir}/nginx.pid;
error_log {conf_dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type text/plain; return 200 "Hello, world!"; }}
  }}
}}
""")
    nginx = "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else "nginx"
    return start("nginx", [nginx, "-c", conf, "-p", conf_dir, "-e", f"{conf_dir}/error.log"],
                 port, workdir)


def start_gunicorn(workdir, workers=2):
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "-k", "uvicorn_worker.Worker", "-w", str(workers),
            "-b", f"127.0.0.1:{port}", "--log-level", "warning", "asgi_hello:app"]
    return start("gunicorn", argv, port, workdir, cwd=BENCH)


def start_hyper(workdir, threads=2):
    port = free_port()
    return start("hyper", [HYPER_HELLO, f"127.0.0.1:{port}", str(threads)], port, workdir,
                 single_process=True)


def workdir():
    return tempfile.mkdtemp(prefix="forkd-bench.")


# ---- wrk -------------------------------------------------------------------------------

@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    raw: str


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unexpected wrk duration {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(out):
    requests = rps = None
    p50 = p99 = None
    errors = 0
    for line in out.splitlines():
        line = line.strip()
        if m := re.match(r"(\d+) requests in", line):
            requests = int(m.group(1))
        elif line.startswith("Requests/sec:"):
            rps = float(line.split()[1])
        elif line.startswith("50%"):
            p50 = _ms(line.split()[1])
        elif line.startswith("99%"):
            p99 = _ms(line.split()[1])
        elif line.startswith("Socket errors:"):
            errors += sum(int(n) for n in re.findall(r"\d+", line))
        elif line.startswith("Non-2xx or 3xx responses:"):
            errors += int(line.split()[-1])
    if None in (requests, rps, p50, p99):
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    return WrkResult(requests, rps, p50, p99, errors, out)


def wrk(port, connections, duration_s, threads=1, extra=(), path="/"):
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency",
            "--timeout", "5s", *extra, f"http://127.0.0.1:{port}{path}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
    return parse_wrk(done.stdout)


# ---- forkd's scoreboard ----------------------------------------------------------------

def read_scoreboard(server):
    """{worker pid: (requests served, open connections)} for every live worker, from
    the scoreboard as forkd's own /metrics shows it (the server must have been started
    with start_forkd(..., metrics=True)). Checks itself: every live worker must be there."""
    port = server.notes["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    requests, connections = {}, {}
    for line in text.splitlines():
        match = re.match(r'(forkd_worker_requests_total|forkd_worker_connections)'
                         r'\{worker="\d+",pid="(\d+)"\} (\d+)$', line)
        if match:
            name, pid, value = match.group(1), int(match.group(2)), int(match.group(3))
            (requests if name == "forkd_worker_requests_total" else connections)[pid] = value
    live = set(children(server.master_pid))
    if not live <= set(requests):
        raise RuntimeError(f"/metrics lacks workers {sorted(live - set(requests))}:\n{text}")
    return {pid: (requests[pid], connections.get(pid, 0)) for pid in sorted(live)}


# ---- reporting -------------------------------------------------------------------------

def median(values):
    return statistics.median(values) if values else float("nan")


def run(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_gib = int(f.readline().split()[1]) / 1048576
    commit = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": os.uname().release,
        "mem": f"{mem_gib:.0f} GiB",
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "load": open("/proc/loadavg").read().split()[:3],
        "wrk": wrk_version(),
    }


def wrk_version():
    try:
        done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "wrk (version unknown)"
    first = (done.stdout + done.stderr).splitlines()[:1]
    return first[0].split(" Copyright")[0] if first else "wrk (version unknown)"


def cpu_idle_fraction(seconds=5.0):
    """Share of the machine's CPU time that was idle over the next `seconds`."""
    def sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total
    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def busy_processes(threshold=20.0, exclude=()):
    """Other processes using the CPU (noise for a benchmark): ps's %CPU (CPU time over
    lifetime) of at least `threshold`, leaving out the pids in `exclude` (our servers)."""
    out = run(["ps", "-eo", "pcpu,pid,comm", "--sort=-pcpu"]).splitlines()[1:]
    busy = []
    for line in out:
        cpu, pid, comm = line.split(None, 2)
        if float(cpu) < threshold:
            break
        if int(pid) not in exclude and comm != "ps":
            busy.append(f"{comm} {cpu}%")
    return busy


def machine_line(m):
    return (f"Machine: {m['nproc']} cores ({m['cpu']}), {m['mem']}, kernel {m['kernel']}; "
            f"commit {m['commit']}; load average at start {' '.join(m['load'])}.")
