"""5. Slow agent: with RUNNING services running, every Consul answer takes 0.2 s; 20 clients call
meshx.start at once.

Each client has its own ServerProxy; all 20 starts must succeed (default
timeout).  Meanwhile another client calls supervisor.getState back to back;
its p99 must stay under 20 ms.  Baseline, on the same supervisord just
before: 20 clients at once adding and starting twiddler programs
(no Consul), with the same getState sampler.
"""
from benchmarks.context import at_most, row
from benchmarks.stats import ratio, summary_ms
from benchmarks.workload import GetStateSampler, meshx_start, start_many, start_running, twiddler_start

NAME = "5. slow agent, 0.2 s per Consul call (target 4)"
CLIENTS = 20
LATENCY = 0.2
TARGET_P99_MS = 20.0


def run(ctx):
    running = 100 if ctx.quick else 300
    ctx.check_budget(40 + running * 0.1, NAME)
    with ctx.environment(max_processes=running + 2 * CLIENTS + 10) as (double, server):
        start_running(ctx, server, "run-", running)
        double.set_latency(LATENCY)
        results = {}
        for side, start in (("twiddler", twiddler_start), ("meshx", meshx_start())):
            names = ["slow-%s-%d" % (side[0], i) for i in range(CLIENTS)]
            with GetStateSampler(server) as sampler:
                started = start_many(server, names, start, CLIENTS)
            started["getstate"] = summary_ms(sampler.latencies)
            started["getstate_errors"] = sampler.errors
            results[side] = started
            ctx.log("  slow agent %s: %d ok, %d failed in %.2fs; getState p50 %s ms p99 %s ms (%d calls)"
                    % (side, started["ok"], started["failed"], started["total_s"], started["getstate"]["p50_ms"],
                       started["getstate"]["p99_ms"], started["getstate"]["n"]))
            if started["failures"]:
                ctx.log("    failures: %s" % "; ".join(started["failures"][:3]))
        ttl_puts = double.count_requests("PUT", "/v1/agent/check/update/")
    m, b = results["meshx"], results["twiddler"]
    return {
        "name": NAME,
        "rows": [
            row("starts succeeded (of %d), %d running" % (CLIENTS, running), m["ok"], b["ok"], None, "all %d" % CLIENTS,
                m["ok"] == CLIENTS, ""),
            row("total for %d starts" % CLIENTS, m["total_s"], b["total_s"], ratio(m["total_s"], b["total_s"]),
                None, None, "s"),
            row("per start p50", m["calls"]["p50_ms"], b["calls"]["p50_ms"],
                ratio(m["calls"]["p50_ms"], b["calls"]["p50_ms"]), None, None, "ms"),
            row("per start max", m["calls"]["max_ms"], b["calls"]["max_ms"],
                ratio(m["calls"]["max_ms"], b["calls"]["max_ms"]), None, None, "ms"),
            row("getState p50 meanwhile", m["getstate"]["p50_ms"], b["getstate"]["p50_ms"],
                ratio(m["getstate"]["p50_ms"], b["getstate"]["p50_ms"]), None, None, "ms"),
            row("getState p99 meanwhile", m["getstate"]["p99_ms"], b["getstate"]["p99_ms"],
                ratio(m["getstate"]["p99_ms"], b["getstate"]["p99_ms"]), "meshx <= %.0f ms" % TARGET_P99_MS,
                at_most(m["getstate"]["p99_ms"], TARGET_P99_MS), "ms"),
        ],
        "details": {"clients": CLIENTS, "latency_s": LATENCY, "meshx": m, "twiddler": b,
                    "ttl_updates_received": ttl_puts},
    }
