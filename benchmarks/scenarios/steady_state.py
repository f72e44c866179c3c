"""4. Steady state: N services with 10 s TTL updates, nothing else happening.

meshx side: N services started with template {"ttl": {"id": "ttl:{{id}}",
"status": "passing", "ttl": 10000}} (registration and proxy stay the defaults:
the registration's check TTL is the default "10s").  After a settling pause,
supervisord's CPU (utime+stime of all its threads, /proc/<pid>/stat) over the
window, as % of one core, and the TTL updates the double received per second
(expected N/10), and how many TTL checks expired in the double (turned
critical for lack of an update: the update interval equals the check's TTL
here).  Baseline: a supervisord of its own with N idle twiddler
programs, CPU over the same window.
"""
import time

from benchmarks.context import at_most, row
from benchmarks.stats import ratio
from benchmarks.workload import all_running, meshx_start, start_many, twiddler_start, wait_until

NAME = "4. steady state"
TARGET_CPU = 5.0
CONCURRENCY = 50
TEMPLATE = {"ttl": {"id": "ttl:{{id}}", "status": "passing", "ttl": 10000}}
SETTLE = 3.0


def run(ctx):
    n = 100 if ctx.quick else 1000
    window = 10.0 if ctx.quick else 30.0
    ctx.check_budget(2 * (window + SETTLE) + n * 0.06 + 20, NAME)
    meshx = _measure(ctx, n, window, "meshx")
    baseline = _measure(ctx, n, window, "twiddler")
    expected_rate = n / 10.0
    rate_ratio = ratio(meshx["ttl_updates_per_s"], expected_rate)
    return {
        "name": NAME,
        "rows": [
            row("N=%d supervisord CPU (%% of a core, %ds)" % (n, window), meshx["cpu_pct"], baseline["cpu_pct"],
                ratio(meshx["cpu_pct"], baseline["cpu_pct"]), "meshx <= %.0f%%" % TARGET_CPU,
                at_most(meshx["cpu_pct"], TARGET_CPU), "%"),
            row("TTL updates received /s (vs N/10)", meshx["ttl_updates_per_s"], expected_rate, rate_ratio,
                "= N/10 (0.9-1.1x)", None if rate_ratio is None else 0.9 <= rate_ratio <= 1.1, "/s"),
            row("TTL checks expired in the window", meshx["ttl_expirations_in_window"], None, None, None, None, ""),
        ],
        "details": {"n": n, "window_s": window, "meshx": meshx, "twiddler": baseline,
                    "expected_ttl_updates_per_s": expected_rate},
    }


def _measure(ctx, n, window, side):
    with ctx.environment(max_processes=n + 10) as (double, server):
        names = ["st-%d" % i for i in range(n)]
        start = meshx_start(TEMPLATE) if side == "meshx" else twiddler_start
        progress = lambda done, total: ctx.log("    %s %d/%d" % (side, done, total))  # noqa: E731
        ctx.log("  steady state %s: starting %d" % (side, n))
        started = start_many(server, names, start, CONCURRENCY, progress)
        prefix = "meshx-st-" if side == "meshx" else "st-"
        wait_until(lambda: all_running(server, prefix, started["ok"]), 30, what="all RUNNING")
        time.sleep(SETTLE)
        ctx.log("  steady state %s: %d running (%d failed starts), measuring %.0fs"
                % (side, started["ok"], started["failed"], window))
        expired0 = double.ttl_expirations()
        cpu0, puts0, t0 = server.cpu_seconds(), double.count_requests("PUT", "/v1/agent/check/update/"), \
            time.monotonic()
        time.sleep(window)
        cpu1, puts1, t1 = server.cpu_seconds(), double.count_requests("PUT", "/v1/agent/check/update/"), \
            time.monotonic()
        expired = double.ttl_expirations() - expired0
        elapsed = t1 - t0
        result = {
            "started": started["ok"], "failed_starts": started["failed"], "start_total_s": started["total_s"],
            "cpu_pct": round(100.0 * (cpu1 - cpu0) / elapsed, 2),
            "ttl_updates_per_s": round((puts1 - puts0) / elapsed, 2) if side == "meshx" else None,
            "check_statuses_at_end": double.check_statuses("ttl:") if side == "meshx" else None,
            "ttl_expirations_in_window": expired if side == "meshx" else None,
            "rss_kb": server.rss_kb(),
        }
        ctx.log("  steady state %s: CPU %.2f%% of a core, TTL updates %s/s, checks at end %s, TTL expirations %s"
                % (side, result["cpu_pct"], result["ttl_updates_per_s"], result["check_statuses_at_end"],
                   result["ttl_expirations_in_window"]))
    return result
