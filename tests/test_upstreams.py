"""meshx.connect/disconnect/listUpstreams against a real supervisord and a Consul agent."""
import threading
import xmlrpc.client

import pytest

from consul_fixtures import *  # noqa: F401,F403
from supervisord_harness import wait_for
from test_services import agent_services, fault_of, mesh  # noqa: F401


def upstreams_of(agent, sidecar_id):
    return agent_services(agent)[sidecar_id]["Proxy"].get("Upstreams", [])


def test_connect_gives_endpoints_from_the_top_of_the_range(mesh, consul_agent, port_range):
    server = mesh(consul_agent)
    rpc = server.rpc
    high = port_range[1]
    results = rpc.meshx.connect(["db", {"name": "cache"}])
    assert results == [{"name": "db", "address": "127.0.0.1", "port": high},
                       {"name": "cache", "address": "127.0.0.1", "port": high - 1}]

    assert "upstream-node1" in rpc.meshx.list()
    upstreams = upstreams_of(consul_agent, "upstream-node1-sidecar-proxy")
    assert [(u["DestinationName"], u["LocalBindAddress"], u["LocalBindPort"]) for u in upstreams] == [
        ("db", "127.0.0.1", high), ("cache", "127.0.0.1", high - 1)]
    # the rest of the sidecar is kept
    proxy = agent_services(consul_agent)["upstream-node1-sidecar-proxy"]["Proxy"]
    assert proxy["DestinationServiceID"] == "upstream-node1"
    assert rpc.meshx.listUpstreams() == ["db", "cache"]
    assert rpc.meshx.listUpstreams("upstream-node1") == ["db", "cache"]

    again = rpc.meshx.connect(["cache", "db", "queue"])
    assert again[:2] == [results[1], results[0]]
    assert again[2] == {"name": "queue", "address": "127.0.0.1", "port": high - 2}
    names = [u["DestinationName"] for u in upstreams_of(consul_agent, "upstream-node1-sidecar-proxy")]
    assert names == ["db", "cache", "queue"]


def test_connect_to_an_explicit_proxy_service(mesh, consul_agent):
    rpc = mesh(consul_agent).rpc
    rpc.meshx.start("web")
    result = rpc.meshx.connect(["db"], {}, ["web", "web-node1"])
    assert result[0]["name"] == "db"
    assert rpc.meshx.listUpstreams("web-node1") == ["db"]
    assert [u["DestinationName"] for u in upstreams_of(consul_agent, "web-node1-sidecar-proxy")] == ["db"]
    assert "upstream-node1" not in rpc.meshx.list()


def test_an_upstream_template(mesh, consul_agent):
    rpc = mesh(consul_agent).rpc
    template = {"DestinationName": "{{name}}", "Datacenter": "{{dc}}",
                "LocalBindAddress": "{{address}}", "LocalBindPort": "{{$port$}}"}
    result = rpc.meshx.connect([{"name": "db", "dc": "dc1"}, {"name": "bad"}], template)
    assert result[0]["name"] == "db" and "port" in result[0]
    assert result[1]["name"] == "bad" and "unknown variable 'dc'" in result[1]["error"]
    [upstream] = upstreams_of(consul_agent, "upstream-node1-sidecar-proxy")
    assert upstream["Datacenter"] == "dc1"


def test_disconnect_removes_some_and_ignores_unknown(mesh, consul_agent, port_range):
    rpc = mesh(consul_agent).rpc
    rpc.meshx.connect(["a", "b", "c"])
    assert rpc.meshx.disconnect(["a", "nope", "c"]) == ["a", "c"]
    assert rpc.meshx.listUpstreams() == ["b"]
    assert [u["DestinationName"] for u in upstreams_of(consul_agent, "upstream-node1-sidecar-proxy")] == ["b"]
    assert rpc.meshx.disconnect(["a"]) == []


def test_disconnect_with_restart_bumps_the_proxy(mesh, consul_agent):
    rpc = mesh(consul_agent).rpc
    rpc.meshx.connect(["a"])
    before = rpc.meshx.info("upstream-node1")
    assert rpc.meshx.disconnect(["a"], "", True) == ["a"]
    after = wait_for(lambda: (lambda i: i if i["state"] == "RUNNING" else None)(rpc.meshx.info("upstream-node1")))
    assert after["pid"] != before["pid"]
    assert after["restarts"] == 0


def test_concurrent_connects_all_land(mesh, consul_double):
    server = mesh(consul_double)
    server.rpc.meshx.start("upstream")  # the default proxy service exists first
    consul_double.latency = 0.05
    results = {}

    def connect(i):
        results[i] = server.rpc.meshx.connect(["svc%d" % i])
    threads = [threading.Thread(target=connect, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ports = [results[i][0]["port"] for i in range(8)]
    assert len(set(ports)) == 8
    names = [u["DestinationName"] for u in upstreams_of(consul_double, "upstream-node1-sidecar-proxy")]
    assert sorted(names) == sorted("svc%d" % i for i in range(8))
    assert sorted(server.rpc.meshx.listUpstreams()) == sorted(names)


def test_faults_for_unknown_proxy_services(mesh, consul_agent):
    rpc = mesh(consul_agent).rpc
    for call, args in ((rpc.meshx.listUpstreams, ("nobody",)), (rpc.meshx.disconnect, (["a"], "nobody"))):
        fault = fault_of(call, *args)
        assert fault.faultCode == 1002 and fault.faultString.startswith("SERVICE_NOT_OWNED: nobody")
    assert fault_of(rpc.meshx.connect, "db").faultCode == 3
    assert fault_of(rpc.meshx.connect, ["db"], {}, ["only-one"]).faultCode == 3
    assert fault_of(rpc.meshx.connect, ["x;rm -rf /"]).faultCode == 10
