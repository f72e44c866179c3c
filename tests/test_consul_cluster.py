"""A cluster of Consul agent doubles sharing one catalog, over real HTTP (double-only)."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from supervisor_meshx.testing.consul_double import ConsulCluster, ConsulDouble
from supervisord_harness import wait_for


def _can_bind(address):
    try:
        with socket.socket() as probe:
            probe.bind((address, 0))
        return True
    except OSError:
        return False


ADDRESS_LAYOUTS = [pytest.param(["127.0.0.1", "127.0.0.1"], id="one-address")]
if _can_bind("127.0.0.2"):
    ADDRESS_LAYOUTS.append(pytest.param(["127.0.0.1", "127.0.0.2"], id="two-addresses"))


@pytest.fixture(params=ADDRESS_LAYOUTS)
def cluster(request):
    with ConsulCluster(nodes=("node1", "node2"), addresses=request.param) as started:
        yield started


def put(agent, path, body=None):
    response = requests.put(agent.url + path, data="" if body is None else json.dumps(body), timeout=10)
    assert response.status_code == 200, response.text
    return response


def get(agent, path, **kwargs):
    response = requests.get(agent.url + path, timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    return response


def register_web(agent, **extra):
    put(agent, "/v1/agent/service/register", dict({
        "Name": "web", "ID": "web-" + agent.node_name, "Port": 8080,
        "Check": {"CheckID": "ttl:web-" + agent.node_name, "TTL": "30s", "Status": "passing"}}, **extra))


def passing_nodes(agent, path):
    return sorted(entry["Node"]["Node"] for entry in get(agent, path + "?passing").json())


def test_agents_are_separate_nodes_on_their_own_addresses(cluster):
    node1, node2 = cluster.agents
    assert cluster.agent("node2") is node2
    assert node1.port != node2.port
    assert node1.http_addr == "%s:%d" % (node1.address, node1.port)
    assert get(node2, "/v1/agent/self").json()["Config"]["NodeName"] == "node2"
    register_web(node1)
    assert list(get(node1, "/v1/agent/services").json()) == ["web-node1"]
    assert get(node2, "/v1/agent/services").json() == {}  # agent endpoints stay local


def test_a_service_on_node1_is_in_node2s_catalog_with_node1s_address(cluster):
    node1, node2 = cluster.agents
    register_web(node1, Tags=["v1"])
    [entry] = get(node2, "/v1/catalog/service/web").json()
    assert (entry["Node"], entry["Address"], entry["ServiceID"], entry["ServicePort"]) == \
        ("node1", node1.address, "web-node1", 8080)
    assert get(node2, "/v1/catalog/services").json() == {"web": ["v1"]}
    [instance] = get(node2, "/v1/health/service/web").json()
    assert instance["Node"]["Address"] == node1.address
    assert [check["CheckID"] for check in instance["Checks"]] == ["serfHealth", "ttl:web-node1"]
    put(node1, "/v1/agent/service/deregister/web-node1")
    assert get(node2, "/v1/catalog/service/web").json() == []


def test_the_same_service_on_both_nodes_is_two_instances(cluster):
    node1, node2 = cluster.agents
    register_web(node1)
    register_web(node2)
    for agent in cluster.agents:
        entries = get(agent, "/v1/catalog/service/web").json()
        assert [(e["Node"], e["Address"]) for e in entries] == [("node1", node1.address), ("node2", node2.address)]
        assert passing_nodes(agent, "/v1/health/service/web") == ["node1", "node2"]


def test_a_failing_ttl_check_on_node1_drops_it_from_passing_on_node2(cluster):
    node1, node2 = cluster.agents
    register_web(node1)
    register_web(node2)
    put(node1, "/v1/agent/check/warn/ttl:web-node1")  # passing-only drops warning too
    assert passing_nodes(node2, "/v1/health/service/web") == ["node2"]
    put(node1, "/v1/agent/check/fail/ttl:web-node1")
    assert passing_nodes(node2, "/v1/health/service/web") == ["node2"]
    assert len(get(node2, "/v1/health/service/web").json()) == 2  # without ?passing both are there
    put(node1, "/v1/agent/check/pass/ttl:web-node1")
    assert passing_nodes(node2, "/v1/health/service/web") == ["node1", "node2"]


def test_a_stopped_agent_leaves_its_instances_in_the_catalog_but_not_passing(cluster):
    node1, node2 = cluster.agents
    register_web(node1)
    register_web(node2)
    node1.stop()
    assert passing_nodes(node2, "/v1/health/service/web") == ["node2"]
    entries = get(node2, "/v1/health/service/web").json()
    serf = {entry["Node"]["Node"]: entry["Checks"][0] for entry in entries}
    assert (serf["node1"]["CheckID"], serf["node1"]["Status"]) == ("serfHealth", "critical")
    assert serf["node2"]["Status"] == "passing"
    node1.start()
    assert passing_nodes(node2, "/v1/health/service/web") == ["node1", "node2"]


def test_health_connect_returns_the_sidecar_proxies(cluster):
    node1, node2 = cluster.agents
    for agent in cluster.agents:
        register_web(agent, Connect={"SidecarService": {"Port": 21000 + int(agent.node_name[-1])}})
    entries = get(node1, "/v1/health/connect/web").json()
    assert [(e["Node"]["Node"], e["Node"]["Address"], e["Service"]["Kind"], e["Service"]["Port"],
             e["Service"]["Proxy"]["DestinationServiceName"]) for e in entries] == \
        [("node1", node1.address, "connect-proxy", 21001, "web"),
         ("node2", node2.address, "connect-proxy", 21002, "web")]
    # the sidecars' TCP checks are critical until something listens: none passes
    assert get(node1, "/v1/health/connect/web?passing").json() == []
    assert get(node1, "/v1/health/connect/nothing").json() == []


def test_a_blocking_query_returns_on_a_change_and_times_out_otherwise(cluster):
    node1, node2 = cluster.agents
    register_web(node1)
    index = int(get(node2, "/v1/health/service/web").headers["X-Consul-Index"])
    started = time.monotonic()
    unchanged = get(node2, "/v1/health/service/web?index=%d&wait=1s" % index)
    assert time.monotonic() - started >= 1.0
    assert int(unchanged.headers["X-Consul-Index"]) == index

    answers = []
    waiter = threading.Thread(target=lambda: answers.append(
        get(node2, "/v1/health/service/web?passing&index=%d&wait=20s" % index)))
    waiter.start()
    wait_for(lambda: node2.count_requests("GET", "/v1/health/service/web") >= 2, message="the query blocks")
    put(node1, "/v1/agent/check/fail/ttl:web-node1")
    waiter.join(10)
    assert not waiter.is_alive()
    assert int(answers[0].headers["X-Consul-Index"]) > index
    assert answers[0].json() == []


def test_a_lone_double_answers_the_catalog_for_its_own_node():
    with ConsulDouble() as agent:
        register_web(agent)
        [entry] = get(agent, "/v1/catalog/service/web").json()
        assert (entry["Node"], entry["Address"]) == ("node1", "127.0.0.1")


def test_catalog_results_are_filtered_by_acls():
    tokens = {"writer": {"service_write": ["*"], "node_write": True},
              "web-reader": {"service_read": ["web"], "node_read": True}}
    with ConsulCluster(acl_default_policy="deny", acl_tokens=tokens) as cluster:
        node1, node2 = cluster.agents
        for name in ("web", "db"):
            response = requests.put(node1.url + "/v1/agent/service/register", json={"Name": name, "Port": 1},
                                    headers={"X-Consul-Token": "writer"}, timeout=10)
            assert response.status_code == 200, response.text
        reader = {"X-Consul-Token": "web-reader"}
        assert get(node2, "/v1/catalog/service/web").json() == []  # anonymous: no node:read, no service:read
        assert get(node2, "/v1/catalog/services").json() == {}
        assert [e["ServiceName"] for e in get(node2, "/v1/catalog/service/web", headers=reader).json()] == ["web"]
        services = get(node2, "/v1/catalog/services", headers=reader)
        assert services.json() == {"web": []}
        assert services.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
        assert get(node2, "/v1/health/service/db", headers=reader).json() == []
        assert requests.get(node2.url + "/v1/catalog/services", headers={"X-Consul-Token": "nope"},
                            timeout=10).status_code == 403


def test_the_command_line_starts_one_agent_per_node():
    process = subprocess.Popen([sys.executable, "-m", "supervisor_meshx.testing.consul_double",
                                "--nodes", "node1,node2", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        lines = [process.stdout.readline().strip() for _ in range(2)]
        assert [line.split(" listening on ")[0] for line in lines] == \
            ["consul double node1", "consul double node2"], lines
        urls = [line.split(" listening on ")[1] for line in lines]
        requests.put(urls[0] + "/v1/agent/service/register", json={"Name": "web"}, timeout=10)
        [entry] = requests.get(urls[1] + "/v1/catalog/service/web", timeout=10).json()
        assert entry["Node"] == "node1"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
