"""4. Crash to restart: SIGKILL a RUNNING proxy, time until its replacement has a pid.

meshx side: 20 services (10 with --quick) started with meshx.start, each proxy killed once
(the plugin's first restart after a failure is immediate; later consecutive
ones back off, and max_proxy_restarts caps them, so one kill per proxy).
Baseline: a plain supervisord program (numprocs=20, autorestart=true,
startsecs=1, same as the proxies), each process killed once.  Both in one
supervisord, samples alternating; the client polls supervisor.getProcessInfo
(the proxy is a supervisord process too) every POLL seconds.
"""
import os
import signal
import time

from benchmarks.context import at_most, row
from benchmarks.server import program_section
from benchmarks.stats import median, percentile, ratio, summary_ms
from benchmarks.workload import all_running, meshx_start, start_many, wait_until

NAME = "4. crash to restart (target 3)"
TARGET = 1.1
POLL = 0.005


def run(ctx):
    samples = 10 if ctx.quick else 20
    ctx.check_budget(samples * 2 * 1.5 + 10, NAME)
    extra = program_section("crash", count=samples, autorestart=True)
    with ctx.environment(max_processes=2 * samples + 10, extra_config=extra) as (_double, server):
        ids = ["crash-%02d" % i for i in range(samples)]
        started = start_many(server, ids, meshx_start(), samples)
        if started["failed"]:
            raise RuntimeError("meshx.start failed: %s" % started["failures"])
        wait_until(lambda: all_running(server, "crash-", samples), 30, what="crash programs RUNNING")
        wait_until(lambda: all_running(server, "meshx-crash-", samples), 30, what="proxies RUNNING")
        rpc = server.rpc()
        meshx, baseline = [], []
        for i in range(samples):
            sides = [("meshx", _meshx_sample), ("baseline", _program_sample)]
            if i % 2:
                sides.reverse()
            for side, sample in sides:
                elapsed = sample(rpc, i)
                (meshx if side == "meshx" else baseline).append(elapsed)
            if i % 5 == 4:
                ctx.log("  crash to restart: %d/%d samples" % (i + 1, samples))
    median_ratio = ratio(median(meshx), median(baseline))
    p99_ratio = ratio(percentile(meshx, 99), percentile(baseline, 99))
    m, b = summary_ms(meshx), summary_ms(baseline)
    return {
        "name": NAME,
        "rows": [
            row("kill -> new pid, median", m["p50_ms"], b["p50_ms"], median_ratio, "ratio <= %.1f" % TARGET,
                at_most(median_ratio, TARGET), "ms"),
            row("kill -> new pid, p99", m["p99_ms"], b["p99_ms"], p99_ratio, None, None, "ms"),
        ],
        "details": {"samples": samples, "poll_s": POLL, "meshx": m, "autorestart_program": b},
    }


def _meshx_sample(rpc, i):
    group = "meshx-crash-%02d-bench" % i
    return _kill_and_wait(lambda: rpc.supervisor.getProcessInfo("%s:%s" % (group, group)))


def _program_sample(rpc, i):
    name = "crash:crash-%02d" % i
    return _kill_and_wait(lambda: rpc.supervisor.getProcessInfo(name))


def _kill_and_wait(info, timeout=15.0):
    before = info()
    if before["statename"] != "RUNNING" or not before["pid"]:
        raise RuntimeError("not RUNNING before the kill: %r" % before)
    began = time.monotonic()
    os.kill(before["pid"], signal.SIGKILL)
    while True:
        now = info()
        if now["pid"] not in (0, before["pid"]):
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise RuntimeError("no replacement within %ss: %r" % (timeout, now))
        time.sleep(POLL)
