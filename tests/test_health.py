"""Health-driven restarts: a proxy that runs but no longer serves is restarted, cause ``health``.

The stand-in proxies say when they serve (``<file>.serving``) and serve until the test creates
``<file>`` (each run deletes it as it starts, so a restarted proxy serves again): what a test sees
never depends on how fast an interpreter starts."""
import sys

from consul_fixtures import *  # noqa: F401,F403
from supervisord_harness import wait_for
from test_services import agent_checks, mesh  # noqa: F401

# Listens on the sidecar port; closes its listener (and keeps running) once the file argv[2] exists.
TCP_STANDIN = """
import os, socket, sys, time
if os.path.exists(sys.argv[2]):
    os.remove(sys.argv[2])
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
open(sys.argv[2] + ".serving", "a").close()
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
listener.close()
time.sleep(1000)
"""

# Envoy's admin API on the admin port: /ready answers 200, or 503 once the file argv[2] exists.
ENVOY_STANDIN = """
import http.server, os, sys
if os.path.exists(sys.argv[2]):
    os.remove(sys.argv[2])
class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ready" and not os.path.exists(sys.argv[2]) else 503)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ready)
open(sys.argv[2] + ".serving", "a").close()
server.serve_forever()
"""
FAST_TTL = {"id": "ttl:{{id}}", "status": "passing", "ttl": 200}


def ttl_check(agent):
    return agent_checks(agent)["ttl:web-node1"]


def healthy_restart(server, agent, trigger, probe_output):
    """Make the proxy fail its probe; wait for critical naming the probe, one restart, passing again."""
    rpc = server.rpc
    serving = trigger.with_name(trigger.name + ".serving")
    wait_for(serving.exists, message="the stand-in serving")
    serving.unlink()
    restarts = rpc.meshx.info("web-node1")["restarts"]  # a slow start may have cost one already
    trigger.touch()
    wait_for(lambda: ttl_check(agent)["Status"] == "critical" and probe_output in ttl_check(agent)["Output"],
             message="TTL critical while the probe fails")
    info = wait_for(lambda: (lambda i: i if i["restarts"] > restarts and i["state"] == "RUNNING" else None)(
        rpc.meshx.info("web-node1")), message="the health restart")
    assert info["restarts_by_cause"] == {"crash": 0, "health": info["restarts"]}
    wait_for(serving.exists, message="the restarted stand-in serving")
    wait_for(lambda: ttl_check(agent)["Status"] == "passing", message="passing again")
    assert "is unhealthy" in server.log()


def test_a_proxy_that_stops_listening_is_restarted_for_its_health(mesh, consul_double, tmp_path):
    server = mesh(consul_double, proxy_health_interval="0.2", proxy_health_failures="3")
    trigger = tmp_path / "close"
    server.rpc.meshx.start("web", {"proxy": [sys.executable, "-c", TCP_STANDIN, "{{sidecar_port}}", str(trigger)],
                                   "ttl": FAST_TTL}, False, 0)
    healthy_restart(server, consul_double, trigger, "health probe fails: tcp 127.0.0.1:")


def test_envoy_health_is_its_ready_endpoint(mesh, consul_double, tmp_path):
    server = mesh(consul_double, proxy_health_interval="0.2", proxy_health_failures="3")
    trigger = tmp_path / "unready"
    server.rpc.meshx.start("web", {"health": "envoy", "ttl": FAST_TTL,
                                   "proxy": [sys.executable, "-c", ENVOY_STANDIN, "{{admin_port}}", str(trigger)]},
                           False, 0)
    healthy_restart(server, consul_double, trigger, "/ready answered 503")


def test_probes_are_off_by_default(mesh, consul_double, tmp_path):
    server = mesh(consul_double)
    trigger = tmp_path / "close"
    server.rpc.meshx.start("web", {"proxy": [sys.executable, "-c", TCP_STANDIN, "{{sidecar_port}}", str(trigger)],
                                   "ttl": FAST_TTL})
    wait_for(trigger.with_name("close.serving").exists, message="the stand-in serving")
    trigger.touch()
    updates = consul_double.count_requests("PUT", "/v1/agent/check/update/ttl:web-node1")
    wait_for(lambda: consul_double.count_requests("PUT", "/v1/agent/check/update/ttl:web-node1") >= updates + 5,
             message="five more TTL updates")
    assert server.rpc.meshx.info("web-node1")["restarts"] == 0
    assert ttl_check(consul_double)["Status"] == "passing"
