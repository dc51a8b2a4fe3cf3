#!/usr/bin/env python3
"""Turns the JSON of one bench/run.sh run (compare, probes, variants, allocs) into a
markdown section for bench/RESULTS.md: the comparison table, forkd's targets with
met / not met, and the measurements behind the design decisions.

    bench/report.py DIR [--conditions TEXT] >> bench/RESULTS.md"""

import argparse
import json
import os

import benchlib as b

LABELS = {"forkd": "forkd (2 workers, threads = 1)", "nginx": "nginx (2 workers)",
          "gunicorn": "Gunicorn + UvicornWorker (2 workers)",
          "hyper": "plain hyper (1 process, 2 threads)",
          "forkd-t2": "forkd, 2 workers, threads = 2", "forkd-w1t2": "forkd, 1 worker, threads = 2",
          "mimalloc": "forkd + mimalloc", "jemalloc": "forkd + jemalloc",
          "cargo-default": "forkd, cargo's default release profile (no LTO, 16 CGUs)",
          "thin-lto": "forkd, thin LTO, 16 CGUs", "panic-abort": "forkd, fat LTO, panic = abort"}


def load(d, name):
    path = os.path.join(d, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def mib(kib):
    return kib / 1024


def summarize(tp):
    """{(server, conns): {...medians...}}"""
    out = {}
    for n in tp["settings"]["servers"]:
        for c in tp["settings"]["conns"]:
            rs = [r for r in tp["runs"] if r["server"] == n and r["conns"] == c]
            if not rs:
                continue
            workers = [w[0] for r in rs for w in r["workers_kib"]]
            out[(n, c)] = {
                "rps": b.median([r["rps"] for r in rs]),
                "rps_min": min(r["rps"] for r in rs), "rps_max": max(r["rps"] for r in rs),
                "p50": b.median([r["p50_ms"] for r in rs]),
                "p99": b.median([r["p99_ms"] for r in rs]),
                "errors": sum(r["errors"] for r in rs),
                "cpu_us": b.median([r.get("cpu_us_per_request", float("nan")) for r in rs]),
                "requests": sum(r["requests"] for r in rs),
                "master": max(r["master_kib"][0] for r in rs),
                "worker": max(workers) if workers else None,
            }
    return out


def throughput_table(tp, summary, lines):
    s = tp["settings"]
    idle = tp.get("idle_memory_kib", {})
    lines.append(f"wrk -t{s['wrk_threads']}, keep-alive, {s['rounds']} rounds of {s['duration_s']} s "
                 f"per server and connection count, servers alternating (order reversed every "
                 f"round). req/s, p50 and p99 are medians over the rounds (req/s range in "
                 f"brackets); errors are summed. RSS in MiB: at rest (after start, before any "
                 f"load) and the largest seen right after a run at that connection count; a "
                 f"worker's is the largest of its workers. Plain hyper is one process: its RSS "
                 f"is in the master column. CPU µs/req: the server's own user + system CPU "
                 f"time (all its processes) per request, median over the rounds; it is less "
                 f"sensitive than req/s to other processes taking the cores.")
    lines.append("")
    lines.append("| server | conns | req/s | p50 ms | p99 ms | errors | CPU µs/req | master RSS rest / load | worker RSS rest / load |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in s["servers"]:
        for c in s["conns"]:
            m = summary.get((n, c))
            if not m:
                continue
            rest = idle.get(n)
            master_rest = f"{mib(rest['master'][0]):.1f}" if rest else "?"
            worker_rest = (f"{mib(max(w[0] for w in rest['workers'])):.1f}"
                           if rest and rest["workers"] else "–")
            worker_load = f"{mib(m['worker']):.1f}" if m["worker"] else "–"
            lines.append(f"| {LABELS.get(n, n)} | {c} | {m['rps']:.0f} ({m['rps_min']:.0f}–{m['rps_max']:.0f}) "
                         f"| {m['p50']:.2f} | {m['p99']:.2f} | {m['errors']} of {m['requests']} "
                         f"| {m['cpu_us']:.2f} | {master_rest} / {mib(m['master']):.1f} | {worker_rest} / {worker_load} |")
    lines.append("")


def targets(tp, summary, probes, lines):
    conns = tp["settings"]["conns"]
    idle = tp.get("idle_memory_kib", {}).get("forkd")
    rows = []

    def ratio_row(other, need, what):
        for c in conns:
            f, o = summary.get(("forkd", c)), summary.get((other, c))
            if f and o:
                r = f["rps"] / o["rps"]
                rows.append((f"{what}, -c{c}", f">= {need:.2f}x",
                             f"{r:.2f}x ({f['rps']:.0f} vs {o['rps']:.0f})", r >= need))

    def best_row(other, need, what):
        # Best round against best round (issue 13: "best of N"), less sensitive than the
        # median to a round that another process on the machine slowed down.
        for c in conns:
            f, o = summary.get(("forkd", c)), summary.get((other, c))
            if f and o:
                r = f["rps_max"] / o["rps_max"]
                rows.append((f"{what}, -c{c}, best of {tp['settings']['rounds']}", f">= {need:.2f}x",
                             f"{r:.2f}x ({f['rps_max']:.0f} vs {o['rps_max']:.0f})", r >= need))

    ratio_row("nginx", 1.0, "throughput vs nginx")
    best_row("nginx", 1.0, "throughput vs nginx")
    ratio_row("gunicorn", 2.5, "throughput vs Gunicorn + UvicornWorker")
    ratio_row("hyper", 0.95, "throughput vs plain hyper")
    best_row("hyper", 0.95, "throughput vs plain hyper")
    f, n = summary.get(("forkd", 256)), summary.get(("nginx", 256))
    if f and n:
        rows.append(("p99 at -c256", f"<= nginx's ({n['p99']:.2f} ms)", f"{f['p99']:.2f} ms",
                     f["p99"] <= n["p99"]))
    if idle:
        w = max(x[0] for x in idle["workers"])
        rows.append(("worker RSS at rest", "<= 4 MiB", f"{mib(w):.2f} MiB", w <= 4096))
        rows.append(("master RSS at rest", "<= 4 MiB", f"{mib(idle['master'][0]):.2f} MiB",
                     idle["master"][0] <= 4096))
    for c in conns:
        m = summary.get(("forkd", c))
        if m:
            rows.append((f"worker RSS under load, -c{c}", "<= 4 MiB", f"{mib(m['worker']):.2f} MiB",
                         m["worker"] <= 4096))
            rows.append((f"master RSS under load, -c{c}", "<= 4 MiB", f"{mib(m['master']):.2f} MiB",
                         m["master"] <= 4096))
            ng = summary.get(("nginx", c))
            if ng and ng["worker"]:
                rows.append((f"worker RSS under load, -c{c}, vs nginx's",
                             f"<= nginx's ({mib(ng['worker']):.2f} MiB)",
                             f"{mib(m['worker']):.2f} MiB", m["worker"] <= ng["worker"]))
    if probes:
        st, tt = probes["start_ms"], probes["ttin_ms"]
        rows.append(("start to first response", "<= 50 ms",
                     f"median {b.median(st):.1f} ms, max {max(st):.1f} ms ({len(st)} starts)",
                     max(st) <= 50))
        rows.append(("a TTIN worker serving", "<= 10 ms",
                     f"median {b.median(tt):.1f} ms, max {max(tt):.1f} ms ({len(tt)} tries)",
                     max(tt) <= 10))
    lines.append("| target | wanted | measured | met |")
    lines.append("| --- | --- | --- | --- |")
    for what, want, got, ok in rows:
        lines.append(f"| {what} | {want} | {got} | {'yes' if ok else '**no**'} |")
    lines.append("")


def probes_section(p, lines):
    lines.append("Spread across workers on the shared accept queue (forkd `hello`, wrk -t1, read "
                 "from the scoreboard: requests served during the run, and open connections at "
                 "mid-run; wrk's own count is the check):")
    lines.append("")
    lines.append("| workers | wrk | requests per worker | share | open connections per worker | wrk counted |")
    lines.append("| --- | --- | --- | --- | --- | --- |")
    for r in p["spread"]:
        reqs = [w["requests"] for w in r["per_worker"]]
        total = sum(reqs) or 1
        share = " / ".join(f"{100 * x / total:.0f}%" for x in reqs)
        conns = " / ".join(str(w["open_connections_mid_run"]) for w in r["per_worker"])
        mode = f"-c{r['conns']}" + (" Connection: close" if r["close"] else " keep-alive")
        lines.append(f"| {r['workers']} | {mode} | {' / '.join(map(str, reqs))} | {share} | {conns} | {r['wrk_requests']} |")
    lines.append("")
    lines.append("Wake-ups of idle workers: new connections arriving one at a time (each request "
                 "on its own connection), workers' voluntary context switches per connection, the "
                 "progress timer's idle rate subtracted:")
    lines.append("")
    lines.append("| workers | connections | accepted per worker | wake-ups per worker | wake-ups per connection (all workers) |")
    lines.append("| --- | --- | --- | --- | --- |")
    for r in p["wakeups"]:
        acc = " / ".join(str(w["accepted"]) for w in r["per_worker"])
        wk = " / ".join(str(w["wakeups"]) for w in r["per_worker"])
        lines.append(f"| {r['workers']} | {r['connections']} | {acc} | {wk} | {r['wakeups_per_connection']:.2f} |")
    lines.append("")


def syscalls_section(p, lines):
    sc = p.get("syscalls")
    if not sc:
        return
    lines.append(f"System calls per keep-alive `hello` request ({sc['requests']} requests on one "
                 f"connection, `strace -f -c` attached to the serving process; calls below 0.01 "
                 f"per request are connection set-up):")
    lines.append("")
    lines.append("| server | system calls per request |")
    lines.append("| --- | --- |")
    for label, key in (("forkd worker", "forkd"), ("plain hyper", "hyper")):
        calls = sc.get(key, {})
        shown = ", ".join(f"{name} {n:g}" for name, n in calls.items() if n >= 0.01)
        lines.append(f"| {label} | {shown} (total {sum(v for v in calls.values() if v >= 0.01):.2f}) |")
    lines.append("")


def epoll_section(rows, lines):
    lines.append("EPOLLEXCLUSIVE, tried outside forkd (`bench/epoll_exclusive.py`: pre-forked "
                 "Python workers on one listener, connections arriving one at a time while every "
                 "worker sleeps):")
    lines.append("")
    lines.append("| mode | workers | context switches per connection | epoll_wait returns per connection | accepted per worker |")
    lines.append("| --- | --- | --- | --- | --- |")
    for r in rows:
        lines.append(f"| {r['mode']} | {r['workers']} | {r['switches_per_connection']} | "
                     f"{r['returns_per_connection']} | {' / '.join(map(str, r['accepted_per_worker']))} |")
    lines.append("")


def reuseport_section(rows, lines):
    lines.append("SO_REUSEPORT against the shared accept queue (`bench/reuse_port.py`: pre-forked "
                 "Python workers, 2 ms per request, 16 client threads opening a connection per "
                 "request; rolling = one worker replaced every 100 ms, new one accepting before "
                 "the old one stops):")
    lines.append("")
    lines.append("| listeners | load | failed requests | workers replaced | served per worker |")
    lines.append("| --- | --- | --- | --- | --- |")
    for r in rows:
        errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items())
        served = " / ".join(map(str, r.get("served_per_worker", []))) or "–"
        lines.append(f"| {r['mode']} | {'rolling' if r['replaced'] else 'steady'} | "
                     f"{r['failed']} of {r['requests']}{f' ({errors})' if errors else ''} | "
                     f"{r['replaced']} | {served} |")
    lines.append("")


def variants_section(v, lines):
    tp = v.get("throughput")
    if tp:
        summary = summarize(tp)
        lines.append("Variants of forkd (2 workers unless named), same wrk settings, alternating:")
        lines.append("")
        lines.append("| variant | req/s -c64 | req/s -c256 | p99 ms -c64 | p99 ms -c256 | CPU µs/req -c64 | CPU µs/req -c256 | worker RSS MiB, -c256 |")
        lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for n in tp["settings"]["servers"]:
            a, c = summary.get((n, 64)), summary.get((n, 256))
            if a and c:
                lines.append(f"| {LABELS.get(n, n)} | {a['rps']:.0f} ({a['rps_min']:.0f}–{a['rps_max']:.0f}) "
                             f"| {c['rps']:.0f} ({c['rps_min']:.0f}–{c['rps_max']:.0f}) | {a['p99']:.2f} "
                             f"| {c['p99']:.2f} | {a['cpu_us']:.2f} | {c['cpu_us']:.2f} | {mib(c['worker']):.1f} |")
        lines.append("")
    rss = v.get("allocator_rss")
    if rss:
        lines.append("Worker RSS (MiB, the larger of 2 workers) per allocator: at rest, then after "
                     "each of 12 wrk runs of 2 s, alternately -c64 and -c256 (no leak: DHAT finds "
                     "the same live heap at exit whatever the number of requests; what stays is "
                     "what the allocator keeps):")
        lines.append("")
        lines.append("| allocator | at rest | after each run |")
        lines.append("| --- | --- | --- |")
        for name, r in rss.items():
            lines.append(f"| {name} | {mib(r['rest']):.1f} | {' '.join(f'{mib(x):.1f}' for x in r['after'])} |")
        lines.append("")
    sizes = v.get("binary_bytes", {})
    if sizes:
        lines.append("Binary sizes: " + ", ".join(f"{k} {v_ / 1048576:.2f} MiB" for k, v_ in sizes.items()) + ".")
        lines.append("")
    if v.get("panic"):
        lines.append("A request that panics (`bench/variants/src/bin/forkd-panicky.rs`, 1 worker, "
                     "20 other keep-alive connections under wrk, graceful_timeout 5 s):")
        lines.append("")
        lines.append("| panic strategy | the panicking request | worker replaced | other requests failed | next answer after | TERM to exit |")
        lines.append("| --- | --- | --- | --- | --- | --- |")
        for r in v["panic"]:
            nxt = f"{r['next_answer_ms']:.1f} ms" if r["next_answer_ms"] is not None else "none in 10 s"
            lines.append(f"| {r['profile']} | {r['panic_request']} | {'yes' if r['worker_replaced'] else 'no'} "
                         f"| {r['other_requests_failed']} of {r['other_requests_ok'] + r['other_requests_failed']} "
                         f"| {nxt} | {r['graceful_stop_s']} s |")
        lines.append("")


def allocs_section(a, lines):
    lines.append(f"Heap allocations per `hello` request (valgrind DHAT, {a['requests']} requests, "
                 f"one worker, baseline run subtracted):")
    lines.append("")
    lines.append("| case | allocations per request | bytes per request |")
    lines.append("| --- | --- | --- |")
    names = {"keepalive": "forkd, keep-alive", "new_connection": "forkd, one connection per request",
             "hyper_keepalive": "plain hyper, keep-alive"}
    for k, label in names.items():
        if k in a:
            lines.append(f"| {label} | {a[k]['allocations_per_request']} | {a[k]['bytes_per_request']:.0f} |")
    lines.append("")
    if "keepalive" in a:
        lines.append("Where forkd's keep-alive allocations come from (innermost frame first, per request):")
        lines.append("")
        for s in a["keepalive"]["sites"][:10]:
            frames = s["site"].split(" <- ")[:3]
            lines.append(f"- {s['per_request']}: `{' <- '.join(frames)}`")
        lines.append("")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--conditions", default="")
    args = ap.parse_args()
    m = load(args.dir, "machine.json") or b.machine()
    tp = load(args.dir, "throughput.json")
    probes = load(args.dir, "probes.json")
    variants = load(args.dir, "variants.json")
    epoll = load(args.dir, "epoll.json")
    allocs = load(args.dir, "allocs.json")
    reuseport = load(args.dir, "reuseport.json")
    lines = ["", f"## Throughput, latency, memory and start-up — {m['date']}, commit {m['commit']}", "",
             b.machine_line(m) + f" {m['wrk']}.", ""]
    if args.conditions:
        lines += [f"Conditions: {args.conditions}", ""]
    if tp:
        summary = summarize(tp)
        throughput_table(tp, summary, lines)
        lines += ["### Targets (`hello`, 2 workers)", ""]
        targets(tp, summary, probes, lines)
    if probes:
        lines += ["### Spread across workers and idle wake-ups", ""]
        probes_section(probes, lines)
        lines += ["### What supervision costs per request", ""]
        syscalls_section(probes, lines)
    if epoll:
        if not probes:
            lines += ["### Spread across workers and idle wake-ups", ""]
        epoll_section(epoll, lines)
    if reuseport:
        reuseport_section(reuseport, lines)
    if variants:
        lines += ["### Runtime flavour, allocator, release profile, panic strategy", ""]
        variants_section(variants, lines)
    if allocs:
        lines += ["### Allocations on the hello response path", ""]
        allocs_section(allocs, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
