"""The plugin's HTTP transport to the agent (consul_transport): TCP, TLS, unix socket.

python-consul2 stays the client library; these tests drive the transport as
python-consul2 would, and through the plugin's ConsulAgent.
"""
import json
import os
import socket
import threading

import consul
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor_meshx.consul_agent import ConsulAgent, ConsulUnavailable, loads_by_member
from supervisor_meshx.consul_connection import ConsulConnection
from supervisor_meshx.consul_transport import ConsulTransport
from supervisor_meshx.testing.consul_double import ConsulDouble


def agent_for(address):
    return ConsulAgent(ConsulConnection(address), timeout=5, log=lambda message: None)


@pytest.fixture
def double():
    with ConsulDouble() as d:
        yield d


@pytest.fixture
def unix_double(tmp_path):
    path = str(tmp_path / "consul.sock")
    with ConsulDouble(unix_socket=path) as d:
        yield d, path


def test_unix_addresses_are_accepted_and_checked():
    connection = ConsulConnection("unix:///run/consul/consul.sock")
    assert (connection.scheme, connection.host) == ("unix", "/run/consul/consul.sock")
    assert connection.proxy_environment()["CONSUL_HTTP_ADDR"] == "unix:///run/consul/consul.sock"
    for bad in ("unix://secret.sock", "unix:///secret" + "a" * 120, "unix:///tmp/secret\n.sock", "unix:///"):
        with pytest.raises(ValueError) as error:
            ConsulConnection(bad)
        assert "unix:///absolute/path" in str(error.value) and "secret" not in str(error.value)


def test_python_consul2_runs_on_the_transport(double):
    client = consul.Consul()
    client.http = ConsulTransport("127.0.0.1", double.port, "http", timeout=5)
    client.agent.service.register("web", service_id="web-1", port=8080)
    assert "web-1" in client.agent.services()


def test_calls_share_one_connection_and_survive_the_agent_closing_it(double):
    agent = agent_for(double.http_addr)
    agent.register({"ID": "web-1", "Name": "web", "Port": 8080})
    connections = []
    original = socket.create_connection
    try:
        socket.create_connection = lambda *a, **k: connections.append(a) or original(*a, **k)
        for _ in range(5):
            assert agent.service("web-1")["Port"] == 8080
        assert connections == []  # kept alive since the registration
        double.drop_connections()  # what an agent restart or an idle timeout does
        assert agent.service("web-1")["Port"] == 8080
        assert len(connections) == 1
    finally:
        socket.create_connection = original
        agent.close()


def test_an_agent_that_is_gone_is_unavailable_not_an_exception(double):
    agent = agent_for(double.http_addr)
    double.stop()
    with pytest.raises(ConsulUnavailable) as error:
        agent.services()
    assert double.http_addr in str(error.value)


def test_the_agent_over_a_unix_socket(unix_double):
    double, path = unix_double
    agent = agent_for("unix://" + path)
    try:
        agent.register({"ID": "web-1", "Name": "web", "Port": 8080, "Check": {"CheckID": "ttl", "TTL": "10s"}})
        assert agent.update_checks([("ttl", "passing", "ok", None), ("nope", "passing", "ok", None)])[0] is None
        assert agent.health("web-1") == "passing"
        assert set(agent.services()) == {"web-1"}
        assert double.count_requests("PUT", "/v1/agent/service/register") == 1
    finally:
        agent.close()
    os.remove(path)
    with pytest.raises(ConsulUnavailable):
        agent_for("unix://" + path).services()


def test_threads_get_connections_of_their_own(double):
    agent = agent_for(double.http_addr)
    agent.register({"ID": "web-1", "Name": "web", "Port": 8080})
    errors = []

    def read():
        try:
            for _ in range(50):
                assert agent.service("web-1")["ID"] == "web-1"
        except Exception as exc:  # reported below
            errors.append(exc)
    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    agent.close()
    assert errors == []


def test_supervisord_reaches_the_agent_and_hands_proxies_the_same_unix_socket(
        make_supervisord, unix_double, tmp_path, port_range, sidecar_port_range):
    double, path = unix_double
    template = tmp_path / "t.json"
    template.write_text(json.dumps({"proxy": ["sleep", "1000"]}))
    server = make_supervisord(meshx_options={
        "consul_http_addr": "unix://" + path, "node_name": "node1", "service_template": str(template),
        "port_range": "%d-%d" % port_range, "sidecar_port_range": "%d-%d" % sidecar_port_range})
    started = server.rpc.meshx.start("web")
    assert started["service_id"] == "web-node1"
    assert double.service("web-node1") is not None
    info = server.rpc.supervisor.getProcessInfo("meshx-web-node1:meshx-web-node1")
    with open("/proc/%d/environ" % info["pid"], "rb") as f:
        environment = f.read().split(b"\0")
    assert ("CONSUL_HTTP_ADDR=unix://" + path).encode() in environment
    server.rpc.meshx.stop("web-node1")
    assert double.service("web-node1") is None


def test_check_updates_carry_the_token_file_as_it_is_now_read_once_per_exchange(double, tmp_path, monkeypatch):
    """A check update's bytes are made once and kept: a rotated token still reaches the next update,
    and a batch reads its token file once, not once per update."""
    from supervisor_meshx import consul_connection
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    agent = ConsulAgent(ConsulConnection(double.http_addr, token_file=str(token_file)), timeout=5,
                        log=lambda message: None)
    for i in range(3):
        agent.register({"ID": "web-%d" % i, "Name": "web", "Check": {"CheckID": "ttl:web-%d" % i, "TTL": "10s"}})
    reads = []
    original = consul_connection.read_token_file
    monkeypatch.setattr(consul_connection, "read_token_file", lambda path: reads.append(path) or original(path))
    updates = [("ttl:web-%d" % i, "passing", "ok", None) for i in range(3)]

    def tokens_sent():
        start = len(double.request_log)
        assert agent.update_checks(updates) == [None, None, None]
        return [r.headers.get("X-Consul-Token") for r in double.request_log[start:]]

    assert tokens_sent() == ["first-token"] * 3 and len(reads) == 1
    token_file.write_text("second-token\n")
    assert tokens_sent() == ["second-token"] * 3 and len(reads) == 2
    assert [c["Status"] for c in double.checks().values()] == ["passing"] * 3


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=20)


def _as_json_would(decode, text):
    try:
        return decode(text)
    except ValueError:
        return "refused"


@settings(max_examples=300, deadline=None)
@given(members=st.dictionaries(st.text(), JSON_VALUES, max_size=6) | JSON_VALUES,
       indent=st.sampled_from([None, 0, 2]), damage=st.tuples(st.integers(0, 10 ** 6), st.sampled_from(
           ["", ",", ":", "{", "}", "]", '"', " ", "x", "1"])))
def test_the_agents_listing_is_decoded_member_by_member_as_json_would(members, indent, damage):
    """The listing of every service is decoded one service at a time (one ``json.loads`` holds the
    interpreter, and supervisord's loop, ~30 ms at 1,000 services): the same values, the same refusals."""
    text = json.dumps(members, indent=indent)
    assert loads_by_member(text) == json.loads(text)
    at, char = damage[0] % (len(text) + 1), damage[1]
    for damaged in (text[:at] + char + text[at:], text[:at] + char + text[at + 1:]):
        assert _as_json_would(loads_by_member, damaged) == _as_json_would(json.loads, damaged), damaged
