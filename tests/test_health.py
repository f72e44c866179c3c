"""Health-driven restarts: a proxy that runs but no longer listens is restarted, cause ``health``."""
import sys

from consul_fixtures import *  # noqa: F401,F403
from supervisord_harness import wait_for
from test_services import agent_checks, mesh  # noqa: F401

# Listens on the sidecar port; the first run closes its listener after a while and keeps running.
FLAKY_LISTENER = """
import os, socket, sys, time
first = not os.path.exists(sys.argv[2])
open(sys.argv[2], "a").close()
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
if first:
    time.sleep(0.5)
    listener.close()
    open(sys.argv[2] + ".closed", "a").close()
time.sleep(1000)
"""


def template(marker):
    return {"proxy": [sys.executable, "-c", FLAKY_LISTENER, "{{sidecar_port}}", str(marker)],
            "ttl": {"id": "ttl:{{id}}", "status": "passing", "ttl": 200}}


def test_a_proxy_that_stops_listening_is_restarted_for_its_health(mesh, consul_double, tmp_path):
    server = mesh(consul_double, proxy_health_interval="0.2", proxy_health_failures="3", proxy_startsecs="1")
    rpc = server.rpc
    rpc.meshx.start("web", template(tmp_path / "ran"), False, 0)
    wait_for(lambda: (lambda c: c["Status"] == "critical" and "health probe fails: tcp 127.0.0.1:" in c["Output"])(
        agent_checks(consul_double)["ttl:web-node1"]), message="TTL critical while the probe fails")
    info = wait_for(lambda: (lambda i: i if i["restarts"] == 1 and i["state"] == "RUNNING" else None)(
        rpc.meshx.info("web-node1")), message="the health restart")
    assert info["restarts_by_cause"] == {"crash": 0, "health": 1}
    wait_for(lambda: agent_checks(consul_double)["ttl:web-node1"]["Status"] == "passing",
             message="passing again")
    assert "is unhealthy" in server.log()


def test_probes_are_off_by_default(mesh, consul_double, tmp_path):
    server = mesh(consul_double)
    server.rpc.meshx.start("web", template(tmp_path / "ran"))
    wait_for(lambda: (tmp_path / "ran.closed").exists(), message="the listener closed")
    updates = consul_double.count_requests("PUT", "/v1/agent/check/update/ttl:web-node1")
    wait_for(lambda: consul_double.count_requests("PUT", "/v1/agent/check/update/ttl:web-node1") >= updates + 5,
             message="five more TTL updates")
    assert server.rpc.meshx.info("web-node1")["restarts"] == 0
    assert agent_checks(consul_double)["ttl:web-node1"]["Status"] == "passing"


# An Envoy stand-in: its admin port answers /ready with 200; the first run's turns to 503 after a while.
ENVOY_READY = """
import http.server, os, sys, time
first = not os.path.exists(sys.argv[2])
open(sys.argv[2], "a").close()
started = time.time()
class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ready = self.path == "/ready" and (not first or time.time() - started < 0.5)
        self.send_response(200 if ready else 503)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ready).serve_forever()
"""


def test_envoy_health_is_its_ready_endpoint(mesh, consul_double, tmp_path):
    # probed once RUNNING (after startsecs): the stand-in listens by then
    server = mesh(consul_double, proxy_health_interval="0.2", proxy_health_failures="3", proxy_startsecs="1")
    command = [sys.executable, "-c", ENVOY_READY, "{{admin_port}}", str(tmp_path / "ran")]
    server.rpc.meshx.start("web", {"health": "envoy", "proxy": command,
                                   "ttl": {"id": "ttl:{{id}}", "status": "passing", "ttl": 200}}, False, 0)
    wait_for(lambda: (lambda c: c["Status"] == "critical" and "/ready answered 503" in c["Output"])(
        agent_checks(consul_double)["ttl:web-node1"]), message="TTL critical while /ready fails")
    info = wait_for(lambda: (lambda i: i if i["restarts_by_cause"]["health"] == 1 and i["state"] == "RUNNING"
                             else None)(server.rpc.meshx.info("web-node1")), message="the health restart")
    assert info["restarts_by_cause"]["crash"] == 0
    wait_for(lambda: agent_checks(consul_double)["ttl:web-node1"]["Status"] == "passing", message="passing again")
