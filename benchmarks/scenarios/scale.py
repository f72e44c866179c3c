"""2. Scale: N services started by meshx.start vs N programs added and started with twiddler.

Each side of each N gets its own supervisord (and Consul double), so the two
never share load.  CONCURRENCY client threads issue the calls, both sides
alike: meshx.start(name) with its default timeout (it returns once Consul
says passing) vs twiddler.addProgramToGroup + supervisor.startProcess(wait=True)
(no Consul).  With startsecs=1 every call lasts at least a second, so calls
one at a time would take N seconds; the per-call figures therefore include
startsecs, unlike the issue's 19 ms anchor (add-and-start without waiting).
With everything RUNNING: 200 sequential supervisor.getState calls and
supervisord's VmRSS.
"""
import time

from benchmarks.context import at_most, row
from benchmarks.stats import ratio, summary_ms
from benchmarks.workload import all_running, getstate_latencies, meshx_start, start_many, twiddler_start, wait_until

NAME = "2. scale"
CONCURRENCY = 50
MAX_SIDE_S = 150.0  # a side still starting after this is cut short and its total projected
TARGET_TOTAL, TARGET_GETSTATE, TARGET_RSS = 1.0, 1.2, 1.5


def run(ctx):
    sizes = [10, 100] if ctx.quick else [10, 100, 1000]
    results = {}
    ctx.partial = lambda: _result(sizes, results)  # what a cut-short run still reports
    for n in sizes:
        results[n] = {}
        for side in ("twiddler", "meshx"):
            ctx.check_budget(n * 0.06 + 10, "%s N=%d %s" % (NAME, n, side))
            results[n][side] = _one(ctx, n, side)
    return _result(sizes, results)


def _result(sizes, results):
    done = [n for n in sizes if len(results.get(n, {})) == 2]
    rows = []
    for n in done:
        m, b = results[n]["meshx"], results[n]["twiddler"]
        targets = n == sizes[-1]
        m_total = m.get("projected_total_s", m["total_s"])
        b_total = b.get("projected_total_s", b["total_s"])
        projected = " (projected: cut short)" if m["cut_short"] or b["cut_short"] else ""
        total_ratio = ratio(m_total, b_total)
        p99_ratio = ratio(m["getstate"]["p99_ms"], b["getstate"]["p99_ms"])
        rss_ratio = ratio(m["rss_kb"], b["rss_kb"])
        rows += [
            row("N=%d total%s" % (n, projected), m_total, b_total, total_ratio,
                "<= %.1fx" % TARGET_TOTAL if targets else None,
                at_most(total_ratio, TARGET_TOTAL) if targets else None, "s"),
            row("N=%d per call p50" % n, m["calls"]["p50_ms"], b["calls"]["p50_ms"],
                ratio(m["calls"]["p50_ms"], b["calls"]["p50_ms"]), None, None, "ms"),
            row("N=%d per call p99" % n, m["calls"]["p99_ms"], b["calls"]["p99_ms"],
                ratio(m["calls"]["p99_ms"], b["calls"]["p99_ms"]), None, None, "ms"),
            row("N=%d failed calls" % n, m["failed"], b["failed"], None, "0" if targets else None,
                (m["failed"] == 0 and b["failed"] == 0) if targets else None, ""),
            row("N=%d supervisord RSS" % n, round(m["rss_kb"] / 1024.0, 1), round(b["rss_kb"] / 1024.0, 1),
                rss_ratio, "<= %.1fx" % TARGET_RSS if targets else None,
                at_most(rss_ratio, TARGET_RSS) if targets else None, "MiB"),
            row("N=%d getState p50" % n, m["getstate"]["p50_ms"], b["getstate"]["p50_ms"],
                ratio(m["getstate"]["p50_ms"], b["getstate"]["p50_ms"]), None, None, "ms"),
            row("N=%d getState p99" % n, m["getstate"]["p99_ms"], b["getstate"]["p99_ms"], p99_ratio,
                "<= %.1fx" % TARGET_GETSTATE if targets else None,
                at_most(p99_ratio, TARGET_GETSTATE) if targets else None, "ms"),
            row("N=%d shutdown (SIGTERM to exit)" % n, m["shutdown_s"], b["shutdown_s"],
                ratio(m["shutdown_s"], b["shutdown_s"]), None, None, "s"),
        ]
    return {"name": NAME, "rows": rows,
            "details": {"concurrency": CONCURRENCY, "sizes": sizes,
                        "results": {str(n): r for n, r in results.items()}}}


def _one(ctx, n, side):
    ctx.log("  scale N=%d %s: starting" % (n, side))
    with ctx.environment(max_processes=n + 10) as (_double, server):
        names = ["sc%d-%d" % (n, i) for i in range(n)]
        start = meshx_start() if side == "meshx" else twiddler_start
        progress = lambda done, total: ctx.log("    %s %d/%d" % (side, done, total))  # noqa: E731
        deadline = time.monotonic() + min(MAX_SIDE_S, max(10.0, ctx.remaining() - 60))
        result = start_many(server, names, start, CONCURRENCY, progress, deadline=deadline)
        prefix = ("meshx-" if side == "meshx" else "") + "sc%d-" % n
        wait_until(lambda: all_running(server, prefix, result["ok"]), 30, what="all RUNNING")
        result["getstate"] = summary_ms(getstate_latencies(server, 200))
        result["rss_kb"] = server.rss_kb()
        if result["cut_short"]:
            ctx.log("  scale N=%d %s: CUT SHORT after %.0fs with %d/%d started; projected total %.0fs"
                    % (n, side, result["total_s"], result["ok"] + result["failed"], n, result["projected_total_s"]))
        ctx.log("  scale N=%d %s: total %.2fs, call p50 %s ms p99 %s ms, failed %d, getState p99 %s ms, RSS %d kB"
                % (n, side, result["total_s"], result["calls"]["p50_ms"], result["calls"]["p99_ms"],
                   result["failed"], result["getstate"]["p99_ms"], result["rss_kb"]))
        if result["failures"]:
            ctx.log("    first failures: %s" % "; ".join(result["failures"][:3]))
    result["shutdown_s"] = None if server.shutdown_s is None else round(server.shutdown_s, 2)
    return result
