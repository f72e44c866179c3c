"""Prometheus metrics: parsed with prometheus_client's own parser, moving with the events."""
import os
import signal
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

from consul_fixtures import *  # noqa: F401,F403
from supervisord_harness import wait_for
from test_services import mesh  # noqa: F401


def samples(text):
    """{(name, labels as a sorted tuple): value}"""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text, name, **labels):
    return samples(text).get((name, tuple(sorted(labels.items()))), 0)


def test_metrics_follow_the_fleet(mesh, consul_double):
    server = mesh(consul_double)
    rpc = server.rpc
    before = rpc.meshx.metrics()
    assert value(before, "meshx_services") == 0
    rpc.meshx.start("web", {"ttl": {"id": "ttl:{{id}}", "status": "passing", "ttl": 200}})
    rpc.meshx.start("api")
    os.kill(rpc.meshx.info("web-node1")["pid"], signal.SIGKILL)
    wait_for(lambda: rpc.meshx.info("web-node1")["restarts"] == 1 and rpc.meshx.info("web-node1")["state"] == "RUNNING")
    consul_double.wipe()
    wait_for(lambda: rpc.meshx.info("web-node1")["reregistrations"] == 1, message="web registered again")

    text = rpc.meshx.metrics()
    assert value(text, "meshx_services") == 2
    assert value(text, "meshx_proxies", state="RUNNING") == 2
    assert value(text, "meshx_proxy_restarts", cause="crash") == 1
    assert value(text, "meshx_proxy_restarts", cause="health") == 0
    assert value(text, "meshx_reregistrations") >= 1
    assert value(text, "meshx_reconciler_repairs_total") >= 1
    assert value(text, "meshx_ttl_updates_total", outcome="sent") > value(before, "meshx_ttl_updates_total",
                                                                          outcome="sent")
    assert value(text, "meshx_ttl_updates_total", outcome="failed") >= 1  # the check was gone after the wipe
    assert value(text, "meshx_agent_calls_total", outcome="ok") >= 4
    assert value(text, "meshx_agent_call_seconds_count") >= value(text, "meshx_agent_calls_total", outcome="ok")


def test_metrics_written_for_the_textfile_collector(mesh, consul_double, tmp_path):
    server = mesh(consul_double)
    server.rpc.meshx.start("web")
    collector_dir = tmp_path / "textfile"
    collector_dir.mkdir()
    target = collector_dir / "meshx.prom"
    written = subprocess.run([sys.executable, "-m", "supervisor_meshx.cli", "-c", server.conf, "metrics",
                              "--output", str(target)], capture_output=True, text=True, timeout=30)
    assert written.returncode == 0 and written.stdout == ""
    assert value(target.read_text(), "meshx_services") == 1
    assert [p.name for p in collector_dir.iterdir()] == ["meshx.prom"]  # no temporary file left
    printed = subprocess.run([sys.executable, "-m", "supervisor_meshx.cli", "-c", server.conf, "metrics"],
                             capture_output=True, text=True, timeout=30)
    assert value(printed.stdout, "meshx_proxies", state="RUNNING") == 1
