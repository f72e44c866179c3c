"""Two nodes of one Consul cluster (the double's ConsulCluster), each with its own
supervisord, talking through the stand-in proxy: the two-node demo, one service
name on both nodes, a node's supervisord killed, a node's instance gone critical.

Double only: a real two-agent Consul cluster on loopback is not set up here."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest
import requests

from supervisor_meshx.testing.consul_double import ConsulCluster
from supervisord_harness import free_port_range, wait_for

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")
STANDIN = os.path.abspath(os.path.join(EXAMPLES, "standin_proxy.py"))
NODES = ("node1", "node2")
ADDRESSES = ("127.0.0.1", "127.0.0.2")

# What the demo uses: the sidecar registers the node's address (tcp_address), where the
# stand-in listens; its checks are Consul's defaults with a TCP interval of 1 s, not 10 s.
TEMPLATE = {
    "registration": {
        "ID": "{{id}}", "Name": "{{name}}",
        "Checks": [{"Name": "TTL check", "CheckID": "ttl:{{id}}", "TTL": "10s"}],
        "Connect": {"SidecarService": {
            "Address": "{{address}}",
            "Checks": [{"Name": "Connect Sidecar Listening", "TCP": "{{address}}:{{sidecar_port}}", "Interval": "1s"},
                       {"Name": "Connect Sidecar Aliasing {{id}}", "AliasService": "{{id}}"}],
            "Proxy": {"LocalServiceAddress": "{{address}}", "LocalServicePort": "{{$port$}}"}}}},
    "proxy": [sys.executable, STANDIN, "-sidecar-for", "{{id}}"],
}


class App:
    """A service's application: answers every connection with its node's name, then closes."""

    def __init__(self, address, port, text):
        self.listener = socket.create_server((address, port))
        self.text = text.encode() + b"\n"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with client:
                try:
                    client.sendall(self.text)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


def ask(address, port):
    """What the service behind ``address:port`` answers; None if nothing does."""
    try:
        with socket.create_connection((address, port), timeout=2) as s:
            s.settimeout(2)
            data = b""
            while True:
                chunk = s.recv(1024)
                if not chunk:
                    break
                data += chunk
            return data.decode().strip() or None
    except OSError:
        return None


def answers(endpoint, count):
    return [ask(*endpoint) for _ in range(count)]


class Node:
    def __init__(self, name, address, agent, server):
        self.name, self.address, self.agent, self.server = name, address, agent, server

    @property
    def rpc(self):
        return self.server.rpc

    def get(self, path):
        response = requests.get(self.agent.url + path, timeout=5)
        response.raise_for_status()
        return response.json()

    def passing(self, name):
        """(node, address, port) of the passing sidecars of ``name``, as this node's agent tells."""
        return sorted((e["Node"]["Node"], e["Service"]["Address"] or e["Node"]["Address"], e["Service"]["Port"])
                      for e in self.get("/v1/health/connect/%s?passing" % name))


@pytest.fixture
def cluster():
    with ConsulCluster(nodes=NODES, addresses=list(ADDRESSES)) as started:
        yield started


@pytest.fixture
def nodes(cluster, make_supervisord, tmp_path, port_range, sidecar_port_range):
    """node1 and node2: each a supervisord with tcp_address its own loopback address and its own agent.
    Both use the same port ranges: endpoints are on different addresses, sidecar ports are
    checked on every address, so they never meet."""
    template = tmp_path / "template.json"
    template.write_text(json.dumps(TEMPLATE))
    made = []
    for name, address in zip(NODES, ADDRESSES):
        agent = cluster.agent(name)
        server = make_supervisord(meshx_options={
            "consul_http_addr": agent.http_addr, "node_name": name, "tcp_address": address,
            "service_template": str(template), "port_range": "%d-%d" % port_range,
            "sidecar_port_range": "%d-%d" % sidecar_port_range})
        made.append(Node(name, address, agent, server))
    return made


@pytest.fixture
def apps():
    started = []

    def serve(address, port, text):
        app = App(address, port, text)
        started.append(app)
        return app
    yield serve
    for app in started:
        app.close()


def start_web(node, apps):
    """``web`` on ``node``, its application answering the node's name."""
    result = node.rpc.meshx.start("web")
    apps(result["address"], result["port"], node.name)
    return result


def test_the_two_node_demo_runs_end_to_end():
    endpoints = free_port_range(20)
    sidecars = free_port_range(20, avoid=endpoints)
    env = dict(os.environ, MESHX_DEMO_PORT_RANGE="%d-%d" % endpoints, MESHX_DEMO_SIDECAR_PORT_RANGE="%d-%d" % sidecars)
    result = subprocess.run(["bash", os.path.join(EXAMPLES, "demo.sh"), "--two-nodes"],
                            capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout
    assert out.count("hello from web on node1") >= 3  # first, after the proxy's restart, after stop/start
    assert "restarts: 1" in out
    assert "no answer" in out
    assert "demo finished: all steps passed" in out


def test_one_name_on_both_nodes_is_two_instances_and_the_upstream_reaches_both(nodes, apps):
    node1, node2 = nodes
    for node in nodes:
        result = start_web(node, apps)
        assert (result["service_id"], result["address"]) == ("web-" + node.name, node.address)

    # the catalog, as either agent tells it: two instances, each sidecar on its node's address
    sidecars = {}
    for node in nodes:
        services = node.get("/v1/catalog/service/web")
        assert sorted((s["Node"], s["ServiceID"]) for s in services) == [("node1", "web-node1"),
                                                                          ("node2", "web-node2")]
        proxies = node.get("/v1/catalog/service/web-sidecar-proxy")
        sidecars = {s["Node"]: (s["ServiceAddress"], s["ServicePort"]) for s in proxies}
        assert {n: a for n, (a, _) in sidecars.items()} == {"node1": "127.0.0.1", "node2": "127.0.0.2"}
    for node in nodes:
        assert sidecars[node.name][1] == node.rpc.meshx.status()[0]["sidecar_port"]
        wait_for(lambda: ask(*sidecars[node.name]) == node.name, message="%s's sidecar" % node.name)
    wait_for(lambda: len(node2.passing("web")) == 2, message="two passing instances of web")

    [upstream] = node2.rpc.meshx.connect(["web"])
    assert upstream["address"] == "127.0.0.2"
    endpoint = (upstream["address"], upstream["port"])
    seen = set()
    wait_for(lambda: seen.update(answers(endpoint, 4)) or {"node1", "node2"} <= seen,
             message="the upstream to reach both instances (seen %s)" % seen)
    # round robin: of a run of connections, each instance gets half
    got = answers(endpoint, 10)
    assert sorted(got) == ["node1"] * 5 + ["node2"] * 5, got


def test_a_node_whose_supervisord_is_killed_leaves_the_other_node_alone(nodes, apps):
    node1, node2 = nodes
    for node in nodes:
        start_web(node, apps)
    [upstream] = node2.rpc.meshx.connect(["web"])
    endpoint = (upstream["address"], upstream["port"])
    wait_for(lambda: {"node1", "node2"} <= set(answers(endpoint, 4)), message="both instances reached")

    def node2_state():
        services = {sid: (s["Port"], s["Meta"].get("meshx-hash"))
                    for sid, s in node2.get("/v1/agent/services").items()}
        checks = {cid: c["Status"] for cid, c in node2.get("/v1/agent/checks").items()}
        proxies = {r["service_id"]: (r["pid"], r["proxy_state"]) for r in node2.rpc.meshx.status()}
        return services, checks, proxies
    wait_for(lambda: all(s == "passing" for s in node2_state()[1].values()), message="node2's checks passing")
    before = node2_state()
    assert set(before[0]) == {"web-node2", "web-node2-sidecar-proxy", "upstream-node2",
                              "upstream-node2-sidecar-proxy"}
    assert all(state == "RUNNING" for _, state in before[2].values())

    orphans = [r["pid"] for r in node1.rpc.meshx.status()]
    node1.server.terminate(signal.SIGKILL)
    try:
        assert node1.server.proc.returncode == -signal.SIGKILL
        # node2 goes on: same registrations, checks passing, same proxies, traffic
        for _ in range(5):
            assert answers(endpoint, 2).count(None) == 0
        assert node2_state() == before
        assert "node2" in [n for n, _, _ in node2.passing("web")]
        # node1's registrations stay in the catalog: only its supervisord died, not its agent
        assert sorted(s["ServiceID"] for s in node2.get("/v1/catalog/service/web")) == ["web-node1", "web-node2"]
    finally:
        for pid in orphans:  # node1's proxies outlive their supervisord
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def test_a_critical_instance_leaves_the_other_nodes_passing_instances(nodes, apps):
    node1, node2 = nodes
    for node in nodes:
        start_web(node, apps)
    [upstream] = node2.rpc.meshx.connect(["web"])
    endpoint = (upstream["address"], upstream["port"])
    wait_for(lambda: len(node2.passing("web")) == 2, message="two passing instances")
    wait_for(lambda: {"node1", "node2"} <= set(answers(endpoint, 4)), message="both instances reached")

    assert node1.rpc.meshx.setTtlStatus("web-node1", "critical") is True
    wait_for(lambda: [n for n, _, _ in node2.passing("web")] == ["node2"],
             message="node1's instance gone from node2's passing instances")
    # the stand-in on node2 follows: every connection goes to node2
    wait_for(lambda: answers(endpoint, 6) == ["node2"] * 6, message="the upstream to send to node2 only")
    assert answers(endpoint, 10) == ["node2"] * 10
    # still registered, its proxy still running: only its health changed
    assert "web-node1" in {s["ServiceID"] for s in node2.get("/v1/catalog/service/web")}
    assert node1.rpc.meshx.info("web-node1")["state"] == "RUNNING"

    assert node1.rpc.meshx.setTtlStatus("web-node1", "passing") is True
    wait_for(lambda: len(node2.passing("web")) == 2, message="node1's instance passing again")
    wait_for(lambda: {"node1", "node2"} <= set(answers(endpoint, 4)), message="both instances reached again")
