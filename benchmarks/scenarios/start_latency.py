"""1. Start latency: meshx.start(name, "", False, 0) one at a time, with RUNNING services running,
vs the same work by hand from one client.

By hand: register the same body (python-consul2's HTTP transport),
twiddler.addProgramToGroup into [group:baseline], supervisor.startProcess
(wait=False), one TTL update.  ``timeout=0`` makes meshx.start answer once its
service is registered and its proxy started, as the hand-done steps do.
Samples alternate which side goes first; one warm-up sample per side is dropped.
"""
import time

from benchmarks.consul import HandClient, registration
from benchmarks.context import at_most, row
from benchmarks.server import program_options
from benchmarks.stats import median, percentile, ratio, summary_ms
from benchmarks.workload import start_running

NAME = "1. start latency, timeout=0, one at a time (target 1)"
TARGET = 1.2
HAND_PORTS = 28000


def run(ctx, unix_socket=False):
    running = 100 if ctx.quick else 300
    samples = 15 if ctx.quick else 30
    name = Unix.NAME if unix_socket else NAME
    ctx.check_budget(running * 0.1 + samples * 0.5 + 20, name)
    with ctx.environment(max_processes=running + 2 * samples + 10, unix_socket=unix_socket) as (double, server):
        rpc = server.rpc()
        start_running(ctx, server, "run-", running)
        hand = HandClient(double.http_addr)
        try:
            meshx, baseline = [], []
            for i in range(samples + 1):
                sides = [("meshx", _meshx), ("hand", _by_hand)]
                if i % 2:
                    sides.reverse()
                for side, measure in sides:
                    elapsed = measure(rpc, hand, i)
                    if i:  # sample 0 warms both sides up
                        (meshx if side == "meshx" else baseline).append(elapsed)
        finally:
            hand.close()
    m, b = summary_ms(meshx), summary_ms(baseline)
    median_ratio = ratio(median(meshx), median(baseline))
    p99_ratio = ratio(percentile(meshx, 99), percentile(baseline, 99))
    return {
        "name": name,
        "rows": [
            row("start p50, %d running" % running, m["p50_ms"], b["p50_ms"], median_ratio,
                "ratio <= %.1f" % TARGET, at_most(median_ratio, TARGET), "ms"),
            row("start p99, %d running" % running, m["p99_ms"], b["p99_ms"], p99_ratio, None, None, "ms"),
        ],
        "details": {"samples": samples, "running": running, "meshx": m, "by_hand": b},
    }


class Unix:
    """The same with the agent on a unix socket."""
    NAME = "2. start latency, timeout=0, agent on a unix socket (target 1, unix)"

    @staticmethod
    def run(ctx):
        return run(ctx, unix_socket=True)


def _meshx(rpc, _hand, i):
    began = time.monotonic()
    rpc.meshx.start("lat-%d" % i, "", False, 0)
    return time.monotonic() - began


def _by_hand(rpc, hand, i):
    name = "hand-%d" % i
    service_id = name + "-bench"
    began = time.monotonic()
    hand.register(registration(service_id, name, "127.0.0.1", HAND_PORTS + i))
    rpc.twiddler.addProgramToGroup("baseline", name, program_options())
    rpc.supervisor.startProcess("baseline:" + name, False)
    hand.ttl_update("ttl:" + service_id)
    return time.monotonic() - began
