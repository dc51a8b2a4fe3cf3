#!/usr/bin/env python3
"""Decisions by measurement: worker runtime flavour, global allocator, release profile
and panic strategy. Builds the bench-only binaries of bench/variants/ (forkd with
another allocator, or another release profile; an embedded app that panics on
`/panic`), then

- measures worker RSS at rest and after repeated load with each allocator;
- runs bench/compare.py over forkd with `threads = 1` (2 workers), `threads = 2`
  (2 workers, and 1 worker), mimalloc, jemalloc, and the release profiles;
- shows what a panicking request does to a worker with panic = "unwind" (forkd's
  profile today) and with panic = "abort": which requests fail, whether the worker is
  replaced, and how long a graceful stop takes afterwards.

    bench/variants.py [--rounds 3] [--duration 6] [--json FILE] [--skip-throughput]"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import benchlib as b

VARIANTS_DIR = os.path.join(b.BENCH, "variants")

# name -> (target dir under bench/variants/target/, CARGO_PROFILE_RELEASE_* overrides)
PROFILES = {
    "current": ("current", {}),  # forkd's own: lto = "fat", codegen-units = 1, panic = "unwind"
    "cargo-default": ("default", {"LTO": "false", "CODEGEN_UNITS": "16"}),
    "thin-lto": ("thin", {"LTO": "thin", "CODEGEN_UNITS": "16"}),
    "abort": ("abort", {"PANIC": "abort"}),
}


def build(profile, bins):
    suffix, overrides = PROFILES[profile]
    target = os.path.join(b.VARIANTS, suffix)
    env = dict(os.environ)
    for key, value in overrides.items():
        env[f"CARGO_PROFILE_RELEASE_{key}"] = value
    argv = ["cargo", "build", "--release", "-q", "--target-dir", target]
    for name in bins:
        argv += ["--bin", name]
    b.log(f"building {', '.join(bins)} ({profile})")
    subprocess.run(argv, cwd=VARIANTS_DIR, env=env, check=True)
    return {name: os.path.join(target, "release", name) for name in bins}


def panic_experiment(wd, binary, label):
    """20 keep-alive connections load one worker; one request panics mid-run."""
    port = b.free_port()
    argv = [binary, "-b", f"127.0.0.1:{port}", "-w", "1", "--graceful-timeout", "5",
            "--log-level", "warn"]
    server = b.start(f"panicky-{label}", argv, port, wd)
    try:
        master = server.master_pid
        before = b.children(master)
        load = subprocess.Popen(["wrk", "-t1", "-c20", "-d4s", "--latency", "--timeout", "2s",
                                 f"http://127.0.0.1:{port}/"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.5)
        try:
            status, _ = b.http_get(port, "/panic", timeout=3)
            panic_answer = f"status {status}" if status else "connection closed, no response"
        except OSError as e:
            panic_answer = f"connection error ({e.__class__.__name__})"
        t_panic = time.monotonic()
        # Time until a request is answered again (by the same or a replacement worker).
        recovered_ms = None
        end = t_panic + 10
        while time.monotonic() < end:
            try:
                if b.http_get(port, "/", timeout=2)[0] == 200:
                    recovered_ms = (time.monotonic() - t_panic) * 1000
                    break
            except OSError:
                pass
            time.sleep(0.001)
        out, _ = load.communicate(timeout=60)
        wrk = b.parse_wrk(out)
        after = b.children(master)
        t_stop = time.monotonic()
        os.kill(master, signal.SIGTERM)
        server.proc.wait(timeout=30)
        stop_s = time.monotonic() - t_stop
        with open(server.notes["log"], errors="replace") as f:
            logtail = [line.strip() for line in f if "panick" in line or "exited" in line][:3]
        return {"profile": label, "panic_request": panic_answer,
                "worker_replaced": before != after, "other_requests_failed": wrk.errors,
                "other_requests_ok": wrk.requests, "next_answer_ms": recovered_ms,
                "graceful_stop_s": round(stop_s, 2), "log": logtail}
    finally:
        server.stop()


def allocator_rss(wd, binaries):
    """Worker RSS at rest and after each of 12 short runs (alternately -c64, -c256)."""
    out = {}
    for name, binary in binaries.items():
        server = b.start_forkd(wd, binary=binary, name=f"rss-{name}")
        try:
            rest = max(w[0] for w in server.memory()["workers"])
            after = []
            for i in range(12):
                b.wrk(server.port, 64 if i % 2 == 0 else 256, 2)
                after.append(max(w[0] for w in server.memory()["workers"]))
            out[name] = {"rest": rest, "after": after}
            b.log(f"RSS {name}: rest {rest} KiB, after runs {after}")
        finally:
            server.stop()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=6)
    ap.add_argument("--json")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    wd = b.workdir()
    bins = build("current", ["forkd-mimalloc", "forkd-jemalloc", "forkd-panicky"])
    bins_default = build("cargo-default", ["forkd-system"])
    bins_thin = build("thin-lto", ["forkd-system"])
    bins_abort = build("abort", ["forkd-system", "forkd-panicky"])
    sizes = {"current": os.path.getsize(b.FORKD),
             "cargo-default": os.path.getsize(bins_default["forkd-system"]),
             "thin-lto": os.path.getsize(bins_thin["forkd-system"]),
             "abort": os.path.getsize(bins_abort["forkd-system"])}
    result = {"binary_bytes": sizes, "panic": []}
    result["allocator_rss"] = allocator_rss(wd, {"system (glibc)": b.FORKD,
                                                 "mimalloc": bins["forkd-mimalloc"],
                                                 "jemalloc": bins["forkd-jemalloc"]})
    for label, binary in (("unwind", bins["forkd-panicky"]), ("abort", bins_abort["forkd-panicky"])):
        r = panic_experiment(wd, binary, label)
        b.log(f"panic: {r}")
        result["panic"].append(r)
    if not args.skip_throughput:
        out = os.path.join(wd, "variants-throughput.json")
        argv = [sys.executable, os.path.join(b.BENCH, "compare.py"),
                "--servers", "forkd,forkd-t2,forkd-w1t2",
                "--binary", f"mimalloc={bins['forkd-mimalloc']}",
                "--binary", f"jemalloc={bins['forkd-jemalloc']}",
                "--binary", f"cargo-default={bins_default['forkd-system']}",
                "--binary", f"thin-lto={bins_thin['forkd-system']}",
                "--binary", f"panic-abort={bins_abort['forkd-system']}",
                "--rounds", str(args.rounds), "--duration", str(args.duration), "--json", out]
        subprocess.run(argv, check=True)
        with open(out) as f:
            result["throughput"] = json.load(f)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
