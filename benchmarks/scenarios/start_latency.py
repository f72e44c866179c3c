"""1. Start latency: meshx.start(name) one service at a time vs the same work by hand.

By hand: register the same body with python-consul2's HTTP transport,
twiddler.addProgramToGroup into [group:baseline], supervisor.startProcess
(wait=True), set the TTL check passing, poll the agent's health by id until 200.
Samples alternate which side goes first; one warm-up sample per side is dropped.
"""
import time

from benchmarks.consul import HandClient, registration
from benchmarks.context import at_most, row
from benchmarks.server import program_options
from benchmarks.stats import median, percentile, ratio, summary_ms

NAME = "1. start latency (one at a time)"
TARGET = 1.2
HAND_PORTS = 28000


def run(ctx):
    samples = 10 if ctx.quick else 20
    ctx.check_budget(samples * 2.5 + 5, NAME)
    with ctx.environment(max_processes=2 * samples + 10) as (double, server):
        rpc = server.rpc()
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
                if i % 5 == 0:
                    ctx.log("  start latency: %d/%d samples" % (i, samples))
        finally:
            hand.close()
    m, b = summary_ms(meshx), summary_ms(baseline)
    median_ratio = ratio(median(meshx), median(baseline))
    p99_ratio = ratio(percentile(meshx, 99), percentile(baseline, 99))
    return {
        "name": NAME,
        "rows": [
            row("start, median", m["p50_ms"], b["p50_ms"], median_ratio, "ratio <= %.1f" % TARGET,
                at_most(median_ratio, TARGET), "ms"),
            row("start, p99", m["p99_ms"], b["p99_ms"], p99_ratio, None, None, "ms"),
        ],
        "details": {"samples": samples, "meshx": m, "by_hand": b},
    }


def _meshx(rpc, _hand, i):
    began = time.monotonic()
    rpc.meshx.start("lat-%d" % i)
    return time.monotonic() - began


def _by_hand(rpc, hand, i):
    name = "hand-%d" % i
    service_id = name + "-bench"
    began = time.monotonic()
    hand.register(registration(service_id, name, "127.0.0.1", HAND_PORTS + i))
    rpc.twiddler.addProgramToGroup("baseline", name, program_options())
    rpc.supervisor.startProcess("baseline:" + name, True)
    hand.ttl_update("ttl:" + service_id)
    deadline = began + 10
    while hand.health_code(service_id) != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("%s not passing by hand" % service_id)
        time.sleep(0.005)
    return time.monotonic() - began
