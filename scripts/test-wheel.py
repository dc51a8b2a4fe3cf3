#!/usr/bin/env python3
"""The Python package's wheel, end to end, as a user without Rust meets it (scripts/test.sh
runs this; it needs scripts/test-deps.sh's virtualenv, which has maturin and ziglang):

1. `pip wheel .` builds the wheel through forkd's build backend (python/pep517), in the
   dev profile (~3 min of CPU from a clean target/; a release build, `lto = "fat"`, takes
   minutes on 2 cores; the backend, zig link and tags are the same), in target/.
2. Its tags are cp39-abi3 and manylinux_2_17 (manylinux2014), and its extension module
   needs no glibc symbol version newer than 2.17 (`objdump -T`).
3. It installs into a fresh virtualenv with no Rust toolchain reachable: PATH without any
   directory holding cargo, rustc or rustup, no CARGO*/RUSTUP* variables, no package index.
4. That virtualenv's `forkd` serves a raw ASGI app on 127.0.0.1 (one request, then TERM,
   exit 0 within a deadline).
5. `pip install` of the source tree in that virtualenv fails at once (no package index,
   no build isolation) with forkd's one line saying to install Rust or use a wheel, and
   downloads nothing: maturin's backend would otherwise fetch a Rust toolchain.

    scripts/test-wheel.py            (PYTHON_TEST_VENV: the builder venv, as test-deps.sh)
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "wheel-test"
BUILDER = Path(os.environ.get("PYTHON_TEST_VENV", ROOT / "target" / "pyenv-test"))
NO_CARGO_LINE = "forkd: building from source needs Rust's cargo on PATH"
MAX_GLIBC = (2, 17)

APP = """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello from the wheel"})
"""


class Failure(Exception):
    pass


def step(text):
    print(f"test-wheel: {text}", flush=True)


def run(argv, log, timeout, **kw):
    """Runs argv with its output in the file `log`; the completed process."""
    with open(log, "w") as out:
        return subprocess.run(
            [str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, timeout=timeout, check=False, **kw)


def check(ok, what, log=None):
    if not ok:
        tail = ""
        if log is not None:
            tail = "\n" + "\n".join(Path(log).read_text(errors="replace").splitlines()[-40:])
        raise Failure(f"{what}{tail}")


def no_rust_env(home):
    """The environment of a machine without Rust: no directory on PATH holds cargo, rustc
    or rustup; no CARGO*, RUSTUP*, RUSTC* variables; a fresh HOME (nothing cached there)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CARGO", "RUSTUP", "RUSTC", "VIRTUAL_ENV", "PYTHONPATH",
                                "MATURIN"))}
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not any(os.path.exists(os.path.join(d, t))
                             for t in ("cargo", "rustc", "rustup"))]
    env["PATH"] = os.pathsep.join(path)
    env["HOME"] = str(home)
    env.pop("XDG_CACHE_HOME", None)
    check(shutil.which("cargo", path=env["PATH"]) is None, "cargo still on the stripped PATH")
    return env


def build_wheel(out):
    log = WORK / "build.log"
    env = dict(os.environ)
    env["PATH"] = f"{BUILDER / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["CARGO_TARGET_DIR"] = str(ROOT / "target")
    env["MATURIN_PEP517_ARGS"] = "--profile dev"
    start = time.monotonic()
    done = run([BUILDER / "bin/python", "-m", "pip", "wheel", "-v", "--no-build-isolation",
                "--no-deps", "--no-index", "--disable-pip-version-check", "-w", out, ROOT],
               log, timeout=1800, env=env, cwd=ROOT)
    check(done.returncode == 0, f"pip wheel . failed (exit {done.returncode}, {log})", log)
    wheels = sorted(out.glob("forkd-*.whl"))
    check(len(wheels) == 1, f"expected one wheel in {out}, found {wheels}")
    step(f"built {wheels[0].name} in {time.monotonic() - start:.0f} s "
         f"({wheels[0].stat().st_size / 1e6:.1f} MB, dev profile)")
    # The build printed cargo's progress (pip -v shows the backend's output).
    check("Compiling forkd-python" in Path(log).read_text(errors="replace")
          or "Fresh forkd-python" in Path(log).read_text(errors="replace")
          or "Finished" in Path(log).read_text(errors="replace"),
          "cargo's output is not in pip -v's output", log)
    return wheels[0]


def wheel_tags(name):
    """(python, abi, [platforms]) from a wheel's file name."""
    parts = name[: -len(".whl")].split("-")
    check(len(parts) == 5, f"unexpected wheel name {name}")
    return parts[2], parts[3], parts[4].split(".")


def glibc_versions(so_bytes):
    """The GLIBC_x.y symbol versions an ELF shared object needs, from `objdump -T`."""
    with tempfile.NamedTemporaryFile(suffix=".so") as f:
        f.write(so_bytes)
        f.flush()
        out = subprocess.run(["objdump", "-T", f.name], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    versions = set()
    for word in out.replace("(", " ").replace(")", " ").split():
        if word.startswith("GLIBC_") and word[6:7].isdigit():
            versions.add(tuple(int(n) for n in word[6:].split(".")))
    return versions


def check_wheel(wheel):
    py, abi, platforms = wheel_tags(wheel.name)
    machine = os.uname().machine
    check(py == "cp39" and abi == "abi3", f"{wheel.name}: not cp39-abi3")
    check(f"manylinux_2_17_{machine}" in platforms and f"manylinux2014_{machine}" in platforms,
          f"{wheel.name}: not tagged manylinux_2_17 / manylinux2014")
    with zipfile.ZipFile(wheel) as z:
        sos = [n for n in z.namelist() if n.endswith(".so")]
        check(len(sos) == 1 and sos[0].startswith("forkd/_native") and ".abi3." in sos[0],
              f"{wheel.name}: expected one forkd/_native.abi3.so, found {sos}")
        versions = glibc_versions(z.read(sos[0]))
    newest = max(versions)
    check(newest <= MAX_GLIBC, f"{sos[0]} needs GLIBC_{'.'.join(map(str, newest))}, "
          f"newer than the tag's {MAX_GLIBC}")
    step(f"tags {py}-{abi}-{'.'.join(platforms)}; newest glibc symbol version "
         f"GLIBC_{'.'.join(map(str, newest))}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, deadline):
    """One HTTP/1.1 GET / on 127.0.0.1:port, retried until the server listens; the reply."""
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                reply = b""
                while chunk := s.recv(65536):
                    reply += chunk
                return reply
        except (ConnectionRefusedError, ConnectionResetError):
            check(time.monotonic() < deadline, f"nothing answered on 127.0.0.1:{port}")
            time.sleep(0.1)


def serve_one_request(venv, env, appdir):
    port = free_port()
    log = WORK / "forkd.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(venv / "bin/forkd"), "-b", f"127.0.0.1:{port}", "-w", "1",
             "-p", str(appdir / "forkd.pid"), "app:app"],
            cwd=appdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        reply = get(port, time.monotonic() + 60)
        check(reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"hello from the wheel"),
              f"unexpected reply {reply[:200]!r}", log)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        check(code == 0, f"forkd exited {code} after TERM", log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    step(f"forkd from the wheel served 127.0.0.1:{port} and stopped on TERM")


def install_source_without_cargo(venv, env):
    log = WORK / "source-no-cargo.log"
    start = time.monotonic()
    done = run([venv / "bin/python", "-m", "pip", "install", "--no-build-isolation",
                "--no-index", "--no-cache-dir", "--disable-pip-version-check", ROOT],
               log, timeout=120, env=env, cwd=WORK)
    took = time.monotonic() - start
    text = Path(log).read_text(errors="replace")
    check(done.returncode != 0, "pip install of the source succeeded without cargo", log)
    check(NO_CARGO_LINE in text, "the no-cargo line is missing", log)
    check(took < 60, f"failing without cargo took {took:.0f} s", log)
    check(not any(w in text.lower() for w in ("puccinialin", "installing rust", "downloading")),
          "something was fetched", log)
    leftovers = [str(p) for p in Path(env["HOME"]).rglob("*")]
    check(not leftovers, f"the install wrote under HOME: {leftovers[:5]}")
    step(f"pip install of the source without cargo failed in {took:.1f} s with: "
         f"{next(l.strip() for l in text.splitlines() if NO_CARGO_LINE in l)}")


def check_backend_args():
    """The backend's choice of maturin arguments: zig and manylinux2014 unless the caller
    (MATURIN_PEP517_ARGS) already chose how to link or tag."""
    sys.path.insert(0, str(ROOT / "python" / "pep517"))
    import forkd_build

    zig = ["--zig", "--compatibility", "manylinux2014"]
    cases = [
        ([], zig),
        (["--profile", "dev"], zig + ["--profile", "dev"]),
        (["--compatibility", "off"], ["--compatibility", "off"]),
        (["--compatibility=manylinux_2_28"], ["--compatibility=manylinux_2_28"]),
        (["--manylinux", "off"], ["--manylinux", "off"]),
        (["--zig", "--release"], ["--zig", "--release"]),
    ]
    for given, expected in cases:
        got = forkd_build.wheel_args(given)
        check(got == expected, f"wheel_args({given}) = {got}, expected {expected}")


def main():
    check_backend_args()
    check((BUILDER / "bin/maturin").exists(),
          f"{BUILDER} has no maturin: run scripts/test-deps.sh first")
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    wheel = build_wheel(WORK / "dist")
    check_wheel(wheel)

    home = WORK / "home"
    home.mkdir()
    env = no_rust_env(home)
    venv = WORK / "venv"
    done = run([sys.executable, "-m", "venv", venv], WORK / "venv.log", timeout=120, env=env)
    check(done.returncode == 0, "python -m venv failed", WORK / "venv.log")
    start = time.monotonic()
    log = WORK / "install.log"
    done = run([venv / "bin/python", "-m", "pip", "install", "--no-index", "--no-cache-dir",
                "--disable-pip-version-check", wheel], log, timeout=300, env=env, cwd=WORK)
    check(done.returncode == 0, "pip install of the wheel failed", log)
    step(f"installed the wheel without Rust in {time.monotonic() - start:.1f} s")

    appdir = WORK / "app"
    appdir.mkdir()
    (appdir / "app.py").write_text(APP)
    serve_one_request(venv, env, appdir)
    install_source_without_cargo(venv, env)
    step("ok")


if __name__ == "__main__":
    try:
        main()
    except (Failure, subprocess.TimeoutExpired) as e:
        print(f"test-wheel: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
