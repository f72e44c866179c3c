"""Graceful, ordered teardown: maintenance first, a drain, then the proxy, then the
registrations; meshx.maintenance on its own."""
import signal
import threading
import time

import requests

from consul_fixtures import *  # noqa: F401,F403
from supervisord_harness import wait_for
from test_services import agent_services, mesh  # noqa: F401


def health(agent, service_id):
    return requests.get(agent.url + "/v1/agent/health/service/id/%s?format=text" % service_id, timeout=5).text


def logged_at(agent, method, path):
    return [r.at for r in agent.request_log if r.method == method and r.path == path]


def term_recorder(path):
    """A proxy that writes the time it got SIGTERM to ``path``."""
    return {"proxy": ["sh", "-c", "trap 'date +%%s.%%N > %s; exit 0' TERM; sleep 1000 & wait" % path]}


def test_stop_drains_then_stops_the_proxy_then_deregisters(mesh, consul_double, tmp_path):
    server = mesh(consul_double)
    stopped_at = tmp_path / "term"
    server.rpc.meshx.start("web", term_recorder(stopped_at))
    thread_result = []

    stopping = threading.Thread(target=lambda: thread_result.append(server.rpc.meshx.stop("web-node1", 2)))
    stopping.start()
    wait_for(lambda: health(consul_double, "web-node1") == "maintenance", message="maintenance while draining")
    while_draining = server.rpc.supervisor.getProcessInfo("meshx-web-node1:meshx-web-node1")["statename"]
    stopping.join(30)
    assert thread_result == [True] and while_draining == "RUNNING"

    [maintenance] = logged_at(consul_double, "PUT", "/v1/agent/service/maintenance/web-node1")
    [deregistered] = logged_at(consul_double, "PUT", "/v1/agent/service/deregister/web-node1")
    term = float(wait_for(lambda: stopped_at.exists() and stopped_at.read_text().strip()))
    assert maintenance + 2.0 <= term <= deregistered
    assert "web-node1" not in agent_services(consul_double)


def test_maintenance_on_and_off_and_kept_across_an_agent_wipe(mesh, consul_double):
    server = mesh(consul_double)
    rpc = server.rpc
    rpc.meshx.start("web", {"ttl": {"id": "ttl:{{id}}", "status": "passing", "ttl": 200}})
    assert rpc.meshx.maintenance("web-node1", True, "upgrading") is True
    assert health(consul_double, "web-node1") == "maintenance"
    assert rpc.meshx.status()[0]["maintenance"] is True
    consul_double.wipe()
    wait_for(lambda: "web-node1" in agent_services(consul_double), message="registered again")
    wait_for(lambda: health(consul_double, "web-node1") == "maintenance", message="maintenance again")
    assert rpc.meshx.maintenance("web-node1", False) is True
    wait_for(lambda: health(consul_double, "web-node1") == "passing", message="out of maintenance")
    assert rpc.meshx.status()[0]["maintenance"] is False


def test_shutdown_drains_all_services_at_once(mesh, consul_double, tmp_path):
    server = mesh(consul_double, stop_drain_seconds="1")
    for name in ("web", "api"):
        server.rpc.meshx.start(name, term_recorder(tmp_path / name))
    signalled = time.time()
    server.terminate(signal.SIGTERM)
    maintenance = [t for sid in ("web-node1", "api-node1")
                   for t in logged_at(consul_double, "PUT", "/v1/agent/service/maintenance/" + sid)]
    deregistered = [t for sid in ("web-node1", "api-node1")
                    for t in logged_at(consul_double, "PUT", "/v1/agent/service/deregister/" + sid)]
    terms = [float((tmp_path / name).read_text()) for name in ("web", "api")]
    assert len(maintenance) == 2 and len(deregistered) == 2
    assert max(maintenance) <= min(terms)  # all in maintenance before any proxy stops: one drain for all
    assert signalled + 1.0 <= min(terms)
    assert agent_services(consul_double) == {}


def test_shutdown_stops_the_proxies_together_after_higher_priorities_and_before_lower(mesh, consul_double,
                                                                                     tmp_path):
    """supervisord stops one group at a time; the proxies (priority 999) stop together, each taking
    a second to exit, after the program that stops before them and before the one that stops after."""
    script = tmp_path / "slow_stop.sh"
    script.write_text("trap 'date +%s.%N > \"$1\"; sleep 1; exit 0' TERM\nsleep 1000 & wait\n")
    programs = "".join("\n[program:%s]\ncommand = sh %s %s\npriority = %d\nstartsecs = 0\n"
                       % (name, script, tmp_path / name, priority)
                       for name, priority in (("stops_first", 1000), ("stops_last", 1)))
    server = mesh(consul_double, extra_config=programs)
    names = ["web", "api", "db"]
    for name in names:
        server.rpc.meshx.start(name, {"proxy": ["sh", str(script), str(tmp_path / name)]})
    server.terminate(signal.SIGTERM)
    first, last = (float((tmp_path / name).read_text()) for name in ("stops_first", "stops_last"))
    proxies = [float((tmp_path / name).read_text()) for name in names]
    assert first + 1.0 <= min(proxies)
    assert max(proxies) - min(proxies) < 1.0  # one after another, each would wait for the last to exit
    assert max(proxies) + 1.0 <= last
    assert agent_services(consul_double) == {}
