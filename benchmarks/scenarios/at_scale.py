"""3. At scale: N services started in one meshx.startMany vs N programs added and started with twiddler.

Each side of each N gets its own supervisord (and Consul double):
- meshx: one ``meshx.startMany(names, "", False, 0)`` (the default template:
  a TTL check of 10 s, updated every 5 s), then until every proxy is RUNNING;
- twiddler: ``twiddler.addProgramToGroup`` + ``supervisor.startProcess(name, False)``
  for each program, one after another from one client, then until all are RUNNING;
- meshx over a unix socket: as meshx, with the agent on a unix socket (N=1000 only);
- bare: supervisord started with N ``[program:x]`` sections (autostart, the same settings),
  so N groups of one process each as the plugin has, where twiddler's programs share one group.
  Bare supervisord is the baseline of the idle figures (getState, CPU, RSS, shutdown); twiddler
  is the baseline of the time to start them all.
Then, all RUNNING and settled: 300 sequential ``supervisor.getState`` calls,
supervisord's CPU (utime+stime of all its threads) over an idle window,
TTL updates received per second, supervisord's VmRSS, and the time from
SIGTERM to supervisord's exit (a clean shutdown stopping every process).
The plugin adds no process of its own, so supervisord's CPU is all of its cost.
"""
import time

from benchmarks.context import at_most, row
from benchmarks.server import program_options, program_section
from benchmarks.stats import ratio, summary_ms
from benchmarks.workload import all_running, getstate_latencies, wait_until

NAME = "3. at scale (targets 2, 5, 6, 7)"
TARGET_GETSTATE, TARGET_CPU_PCT, TARGET_START_MANY, TARGET_RSS, TARGET_SHUTDOWN = 1.2, 3.0, 1.0, 1.5, 1.2
SETTLE = 6.0  # past the first round of TTL updates after the starts
TTL_UPDATE_INTERVAL = 5.0  # the default template's


def run(ctx):
    sizes = [100, 300] if ctx.quick else [300, 1000]
    window = 10.0 if ctx.quick else 20.0
    results = {}
    ctx.partial = lambda: _result(sizes, results)
    for n in sizes:
        results[n] = {}
        sides = ["bare", "twiddler", "meshx"] + (["meshx-unix"] if n == sizes[-1] else [])
        for side in sides:
            ctx.check_budget(n * 0.05 + window + SETTLE + 20, "%s N=%d %s" % (NAME, n, side))
            results[n][side] = _one(ctx, n, side, window)
    return _result(sizes, results)


def _result(sizes, results):
    rows = []
    for n in sizes:
        got = results.get(n, {})
        b, t = got.get("bare"), got.get("twiddler")
        for side in ("meshx", "meshx-unix"):
            m = got.get(side)
            if m is None or b is None or t is None:
                continue
            largest = n == sizes[-1]
            label = "N=%d%s" % (n, " unix" if side == "meshx-unix" else "")
            p99_ratio = ratio(m["getstate"]["p99_ms"], b["getstate"]["p99_ms"])
            start_ratio = ratio(m["start_s"], t["start_s"])
            rss_ratio = ratio(m["rss_kb"], b["rss_kb"])
            shutdown_ratio = ratio(m["shutdown_s"], b["shutdown_s"])
            rows += [
                row("%s start all, to all RUNNING (vs twiddler)" % label, m["start_s"], t["start_s"], start_ratio,
                    "<= %.1fx" % TARGET_START_MANY if largest else None,
                    at_most(start_ratio, TARGET_START_MANY) if largest else None, "s"),
                row("%s getState p50" % label, m["getstate"]["p50_ms"], b["getstate"]["p50_ms"],
                    ratio(m["getstate"]["p50_ms"], b["getstate"]["p50_ms"]), None, None, "ms"),
                row("%s getState p99" % label, m["getstate"]["p99_ms"], b["getstate"]["p99_ms"], p99_ratio,
                    "<= %.1fx" % TARGET_GETSTATE, at_most(p99_ratio, TARGET_GETSTATE), "ms"),
                row("%s supervisord CPU idle (%% of a core)" % label, m["cpu_pct"], b["cpu_pct"],
                    ratio(m["cpu_pct"], b["cpu_pct"]), "meshx <= %.0f%%" % TARGET_CPU_PCT if largest else None,
                    at_most(m["cpu_pct"], TARGET_CPU_PCT) if largest else None, "%"),
                row("%s TTL updates /s (vs N/5)" % label, m["ttl_updates_per_s"], round(n / TTL_UPDATE_INTERVAL, 1),
                    ratio(m["ttl_updates_per_s"], n / TTL_UPDATE_INTERVAL), None, None, "/s"),
                row("%s supervisord RSS" % label, round(m["rss_kb"] / 1024.0, 1), round(b["rss_kb"] / 1024.0, 1),
                    rss_ratio, "<= %.1fx" % TARGET_RSS if largest else None,
                    at_most(rss_ratio, TARGET_RSS) if largest else None, "MiB"),
                row("%s clean shutdown" % label, m["shutdown_s"], b["shutdown_s"], shutdown_ratio,
                    "<= %.1fx" % TARGET_SHUTDOWN if largest else None,
                    at_most(shutdown_ratio, TARGET_SHUTDOWN) if largest else None, "s"),
            ]
        if b is not None and t is not None:
            rows.append(row("N=%d twiddler (one group) getState p99, vs bare" % n, t["getstate"]["p99_ms"],
                            b["getstate"]["p99_ms"], ratio(t["getstate"]["p99_ms"], b["getstate"]["p99_ms"]),
                            None, None, "ms"))
    return {"name": NAME, "rows": rows,
            "details": {"sizes": sizes, "results": {str(n): r for n, r in results.items()}}}


def _one(ctx, n, side, window):
    ctx.log("  at scale N=%d %s: starting" % (n, side))
    extra = "".join(program_section("sc%d-%d" % (n, i)) for i in range(n)) if side == "bare" else ""
    with ctx.environment(max_processes=n + 10, extra_config=extra,
                         unix_socket=side == "meshx-unix") as (double, server):
        rpc = server.rpc()
        names = ["sc%d-%d" % (n, i) for i in range(n)]
        began = time.monotonic()
        if side == "bare":
            prefix = "sc%d-" % n  # started by supervisord itself: its start is not timed
        elif side == "twiddler":
            for name in names:
                rpc.twiddler.addProgramToGroup("baseline", name, program_options())
                rpc.supervisor.startProcess("baseline:" + name, False)
            prefix = "sc%d-" % n
        else:
            failed = [r for r in rpc.meshx.startMany(names, "", False, 0) if "error" in r]
            if failed:
                raise RuntimeError("startMany: %d failed, first %r" % (len(failed), failed[0]))
            prefix = "meshx-sc%d-" % n
        wait_until(lambda: all_running(server, prefix, n), 60 + n * 0.1, interval=0.02, what="all RUNNING")
        result = {"start_s": round(time.monotonic() - began, 2) if side != "bare" else None}
        time.sleep(SETTLE)
        result["getstate"] = summary_ms(getstate_latencies(server, 300))
        cpu0, t0, wall0 = server.cpu_seconds(), time.monotonic(), time.time()
        time.sleep(window)
        cpu1, t1, wall1 = server.cpu_seconds(), time.monotonic(), time.time()
        # counted by arrival time: the double's answer to a count comes late while it serves a burst
        puts = double.count_requests("PUT", "/v1/agent/check/update/", since=wall0, until=wall1)
        result.update(cpu_pct=round(100.0 * (cpu1 - cpu0) / (t1 - t0), 2),
                      ttl_updates_per_s=round(puts / (t1 - t0), 1) if side.startswith("meshx") else None,
                      rss_kb=server.rss_kb())
    result["shutdown_s"] = None if server.shutdown_s is None else round(server.shutdown_s, 2)
    ctx.log("  at scale N=%d %s: start %ss, getState p99 %s ms, CPU %.2f%%, TTL %s/s, RSS %d kB, shutdown %ss"
            % (n, side, result["start_s"], result["getstate"]["p99_ms"], result["cpu_pct"],
               result["ttl_updates_per_s"], result["rss_kb"], result["shutdown_s"]))
    return result
