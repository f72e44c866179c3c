"""meshx.start/stop/list/serviceConfig and TTL health, against a real supervisord
and a Consul agent (the double, or a real `consul agent -dev` when one is on PATH)."""
import json
import os
import socket
import threading
import time
import xmlrpc.client

import pytest
import requests

from consul_fixtures import *  # noqa: F401,F403  (consul_agent, consul_double)
from supervisord_harness import free_port_range, wait_for

NODE = "node1"


@pytest.fixture
def mesh(make_supervisord, tmp_path, port_range, sidecar_port_range):
    """``mesh(agent, extra_config="", **meshx_options)`` → a supervisord whose services run ``sleep`` as proxy."""
    template = tmp_path / "service_template.json"
    template.write_text(json.dumps({"proxy": ["sleep", "1000"]}))

    def make(agent, extra_config="", **options):
        meshx = {"consul_http_addr": agent.http_addr, "node_name": NODE,
                 "service_template": str(template), "port_range": "%d-%d" % port_range,
                 "sidecar_port_range": "%d-%d" % sidecar_port_range}
        meshx.update(options)
        return make_supervisord(meshx_options=meshx, extra_config=extra_config)
    return make


def agent_get(agent, path, token=None):
    headers = {"X-Consul-Token": token} if token else {}
    return requests.get(agent.url + path, headers=headers, timeout=5)


def agent_services(agent):
    return agent_get(agent, "/v1/agent/services").json()


def agent_checks(agent):
    return agent_get(agent, "/v1/agent/checks").json()


def fault_of(call, *args):
    with pytest.raises(xmlrpc.client.Fault) as caught:
        call(*args)
    return caught.value


def assert_nothing_left(server, agent, service_id):
    assert service_id not in agent_services(agent)
    assert service_id + "-sidecar-proxy" not in agent_services(agent)
    assert not [c for c in agent_checks(agent).values() if c["ServiceID"].startswith(service_id)]
    assert "meshx-" + service_id not in server.ctl("status").stdout
    assert service_id not in server.rpc.meshx.list()


def test_start_by_name_registers_service_sidecar_and_proxy(mesh, consul_agent, port_range):
    server = mesh(consul_agent)
    rpc = server.rpc
    result = rpc.meshx.start("web")
    assert result == {"service_id": "web-node1", "address": "127.0.0.1", "port": port_range[0],
                      "already_started": False}

    services = agent_services(consul_agent)
    assert services["web-node1"]["Service"] == "web"
    sidecar = services["web-node1-sidecar-proxy"]
    assert sidecar["Kind"] == "connect-proxy"
    assert sidecar["Proxy"]["DestinationServiceID"] == "web-node1"
    assert sidecar["Proxy"]["LocalServiceAddress"] == "127.0.0.1"
    assert sidecar["Proxy"]["LocalServicePort"] == port_range[0]
    assert agent_get(consul_agent, "/v1/agent/health/service/id/web-node1").status_code == 200
    assert agent_checks(consul_agent)["ttl:web-node1"]["Status"] == "passing"

    assert rpc.meshx.list() == ["web-node1"]
    assert rpc.meshx.info("web-node1")["state"] == "RUNNING"
    config = rpc.meshx.serviceConfig("web-node1")
    assert (config["ID"], config["Port"]) == ("web-node1", 0)
    assert rpc.meshx.serviceConfig("web-node1-sidecar-proxy")["Proxy"]["LocalServicePort"] == port_range[0]


def test_start_with_id_and_with_a_given_endpoint(mesh, consul_agent, port_range):
    rpc = mesh(consul_agent).rpc
    assert rpc.meshx.start({"name": "api", "id": "api-blue"})["service_id"] == "api-blue"
    given = rpc.meshx.start({"name": "db", "address": "127.0.0.9", "port": 5432}, {}, False, 5000)
    assert given == {"service_id": "db-node1", "address": "127.0.0.9", "port": 5432, "already_started": False}
    sidecar = agent_services(consul_agent)["db-node1-sidecar-proxy"]
    assert (sidecar["Proxy"]["LocalServiceAddress"], sidecar["Proxy"]["LocalServicePort"]) == ("127.0.0.9", 5432)
    # the given port did not consume the allocator's range
    assert rpc.meshx.start("next")["port"] == port_range[0] + 1


def test_template_variables_and_typed_leaves(mesh, consul_agent):
    rpc = mesh(consul_agent).rpc
    template = {"registration": {"Name": "{{name}}", "Tags": ["{{team}}", "a&b<c>"],
                                 "Meta": {"version": "{{version}}"}, "Port": "{{$port$}}",
                                 "Check": {"CheckID": "ttl:{{id}}", "TTL": "10s"}}}
    result = rpc.meshx.start({"name": "web", "team": "payments", "version": "1.2"}, template)
    service = agent_services(consul_agent)["web-node1"]
    assert service["Tags"] == ["payments", "a&b<c>"]
    assert service["Meta"]["version"] == "1.2"
    assert (service["Meta"]["meshx-node"], len(service["Meta"]["meshx-instance"])) == ("node1", 16)
    assert service["Port"] == result["port"]


def test_the_ttl_check_must_be_one_of_the_registrations_checks(mesh, consul_agent):
    server = mesh(consul_agent)
    without = {"registration": {"Name": "{{name}}", "Check": {"CheckID": "other", "TTL": "10s"}}}
    fault = fault_of(server.rpc.meshx.start, "web", without)
    assert fault.faultString == ("BAD_TEMPLATE: ttl.id 'ttl:web-node1' is not one of the registration's checks "
                                 "(other)")
    assert_nothing_left(server, consul_agent, "web-node1")
    generated = {"registration": {"Name": "{{name}}", "Checks": [{"TTL": "10s"}]},
                 "ttl": {"id": "service:{{id}}", "status": "passing", "ttl": 1000}}  # the id Consul gives it
    server.rpc.meshx.start("web", generated)
    assert agent_checks(consul_agent)["service:web-node1"]["Status"] == "passing"


def test_start_many_starts_services_concurrently(mesh, consul_double, port_range):
    server = mesh(consul_double)
    consul_double.latency = 0.2
    started = time.monotonic()
    results = server.rpc.meshx.startMany(["a", {"name": "b", "id": "b-blue"}, "bad name", "c"])
    assert time.monotonic() - started < 4  # one at a time would take at least 4 x 3 x 0.2 s
    assert [r.get("service_id") for r in results] == ["a-node1", "b-blue", None, "c-node1"]
    assert results[2]["service"] == "bad name" and results[2]["error"].startswith("BAD_NAME: ")
    assert len({r["port"] for r in results if "port" in r}) == 3
    assert server.rpc.meshx.list() == ["a-node1", "b-blue", "c-node1"]
    assert fault_of(server.rpc.meshx.startMany, "a").faultCode == 3


def test_a_start_reads_the_agent_once_before_it_registers(mesh, consul_double):
    """One listing of the ids equal to the service's or its sidecar's but for case: the case
    check, the service and its sidecar; a startMany shares one listing of everything."""
    server = mesh(consul_double)
    server.rpc.meshx.start("web", "", False, 0)
    register = next(i for i, r in enumerate(consul_double.request_log)
                    if r.method == "PUT" and r.path == "/v1/agent/service/register")
    reads = [r for r in consul_double.request_log[:register]
             if r.method == "GET" and "web-node1" in r.path + str(r.query)]
    assert len(reads) == 1 and reads[0].path == "/v1/agent/services", reads
    before = len(consul_double.request_log)
    server.rpc.meshx.startMany(["a", "b", "c"], "", False, 0)
    assert not [r for r in consul_double.request_log[before:]
                if r.method == "GET" and r.path.startswith("/v1/agent/service/")]


def test_already_started_and_invalid_state(mesh, consul_agent):
    rpc = mesh(consul_agent).rpc
    first = rpc.meshx.start("web")
    again = rpc.meshx.start("web")
    assert again == dict(first, already_started=True)

    rpc.meshx.setTtlStatus("web-node1", "critical")
    wait_for(lambda: agent_checks(consul_agent)["ttl:web-node1"]["Status"] == "critical")
    fault = fault_of(rpc.meshx.start, "web")
    assert fault.faultCode == 1003 and fault.faultString.startswith("INVALID_STATE: ")


def test_a_service_registered_by_someone_else_is_not_taken_without_force(mesh, consul_agent, port_range):
    rpc = mesh(consul_agent).rpc
    requests.put(consul_agent.url + "/v1/agent/service/register",
                 data=json.dumps({"ID": "web-node1", "Name": "web", "Port": 80}), timeout=5).raise_for_status()
    fault = fault_of(rpc.meshx.start, "web")
    assert fault.faultCode == 1002 and fault.faultString.startswith("SERVICE_NOT_OWNED: web-node1")
    assert agent_services(consul_agent)["web-node1"]["Port"] == 80  # untouched
    assert rpc.meshx.list() == []

    taken = rpc.meshx.start("web", {}, True)
    assert taken["service_id"] == "web-node1"
    assert taken["port"] == port_range[0]  # the refused start's port was given back
    assert agent_services(consul_agent)["web-node1"]["Port"] == 0  # our registration now
    assert rpc.meshx.list() == ["web-node1"]


def test_not_passing_in_time_leaves_nothing_behind(mesh, consul_agent, port_range):
    server = mesh(consul_agent)
    rpc = server.rpc
    never_passing = {"ttl": {"id": "ttl:{{id}}", "status": "critical", "ttl": 5000}}
    started = time.monotonic()
    fault = fault_of(rpc.meshx.start, "web", never_passing, False, 300)
    assert fault.faultCode == 1004 and fault.faultString.startswith("SERVICE_ALIVE_TIMEOUT: web-node1")
    assert 0.3 <= time.monotonic() - started < 5
    assert_nothing_left(server, consul_agent, "web-node1")
    # the endpoint was released and the id is free
    assert rpc.meshx.start("web")["service_id"] == "web-node1"


def test_timeout_zero_does_not_wait(mesh, consul_agent):
    rpc = mesh(consul_agent).rpc
    never_passing = {"ttl": {"id": "ttl:{{id}}", "status": "critical", "ttl": 5000}}
    assert rpc.meshx.start("web", never_passing, False, 0)["service_id"] == "web-node1"


@pytest.mark.parametrize("template, reason", [
    ({"registration": {"Name": "{{nope}}"}}, "unknown variable 'nope'"),
    ({"registration": {"ID": "other", "Name": "web"}}, "is not the service id"),
    ({"registration": {"Tags": ["x"]}}, "needs a Name"),
    ({"ttl": {"id": "ttl:{{id}}", "status": "sunny", "ttl": 1000}}, "ttl.status"),
    ({"proxy": "sleep 1000"}, "proxy must be a list of strings"),
    ({"registration": {"Name": "{{#unclosed}}"}}, ""),
])
def test_bad_templates_are_refused_before_anything_is_created(mesh, consul_agent, template, reason):
    server = mesh(consul_agent)
    fault = fault_of(server.rpc.meshx.start, "web", template)
    assert fault.faultCode == 1005 and fault.faultString.startswith("BAD_TEMPLATE: ")
    assert reason in fault.faultString
    assert_nothing_left(server, consul_agent, "web-node1")


def test_a_disallowed_proxy_command_is_refused_before_registration(mesh, consul_agent):
    server = mesh(consul_agent)
    fault = fault_of(server.rpc.meshx.start, "web", {"proxy": ["touch", "/tmp/meshx-owned"]})
    assert fault.faultCode == 1001
    assert not os.path.exists("/tmp/meshx-owned")
    assert_nothing_left(server, consul_agent, "web-node1")


def test_shell_injection_in_an_id_is_refused(mesh, consul_agent):
    server = mesh(consul_agent)
    for service in ({"name": "x", "id": "x;touch${IFS}/tmp/owned"}, "x;touch${IFS}/tmp/owned",
                    {"name": "x$(id)"}, {"id": "noname"}):
        fault = fault_of(server.rpc.meshx.start, service)
        assert fault.faultString.startswith(("BAD_NAME: ", "BAD_ARGUMENTS: ")), service
    assert not os.path.exists("/tmp/owned")
    assert agent_services(consul_agent) == {}
    assert server.rpc.meshx.list() == []


def test_stop_deregisters_and_stopping_twice_is_not_owned(mesh, consul_agent):
    server = mesh(consul_agent)
    rpc = server.rpc
    rpc.meshx.start("web")
    pid = rpc.meshx.info("web-node1")["pid"]

    assert rpc.meshx.stop("web-node1") is True
    assert_nothing_left(server, consul_agent, "web-node1")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    fault = fault_of(rpc.meshx.stop, "web-node1")
    assert fault.faultCode == 1002 and fault.faultString.startswith("SERVICE_NOT_OWNED: web-node1")


def test_ttl_status_is_set_reported_and_critical_while_the_proxy_is_down(mesh, consul_agent):
    server = mesh(consul_agent)
    rpc = server.rpc
    rpc.meshx.start("web")
    assert rpc.meshx.getTtlStatus("web-node1") == "passing"

    assert rpc.meshx.setTtlStatus("web-node1", "warning") is True
    assert rpc.meshx.getTtlStatus("web-node1") == "warning"
    wait_for(lambda: agent_checks(consul_agent)["ttl:web-node1"]["Status"] == "warning")
    assert agent_get(consul_agent, "/v1/agent/health/service/id/web-node1").status_code == 429

    fault = fault_of(rpc.meshx.setTtlStatus, "web-node1", "sunny")
    assert fault.faultCode == 3 and fault.faultString.startswith("BAD_ARGUMENTS: ")
    assert fault_of(rpc.meshx.getTtlStatus, "nobody-node1").faultCode == 1002

    assert server.ctl("stop", "meshx-web-node1").returncode == 0
    # critical already while STOPPING; the output follows the proxy to STOPPED
    wait_for(lambda: (lambda c: c["Status"] == "critical" and "STOPPED" in c["Output"])(
        agent_checks(consul_agent)["ttl:web-node1"]), message="TTL critical, naming STOPPED")
    assert rpc.meshx.getTtlStatus("web-node1") == "warning"  # what was set is kept

    assert server.ctl("start", "meshx-web-node1").returncode == 0
    wait_for(lambda: agent_checks(consul_agent)["ttl:web-node1"]["Status"] == "warning",
             message="TTL back to the set status")


def test_ttl_is_sent_every_interval(mesh, consul_double):
    rpc = mesh(consul_double).rpc
    rpc.meshx.start("web", {"ttl": {"id": "ttl:{{id}}", "status": "passing", "ttl": 200}})
    updates = lambda: consul_double.count_requests("PUT", "/v1/agent/check/update/ttl:web-node1")  # noqa: E731
    first = updates()
    wait_for(lambda: updates() >= first + 3, message="three more TTL updates")


def test_ttl_updates_go_out_once_per_interval_at_the_same_moments_for_every_service(mesh, consul_double):
    """Once its proxy runs, a check is updated once per interval (not a little early each time,
    which adds up), at the moments every other check of that interval is, whenever its service
    started: one tick of supervisord's loop for all of them.  (The updates of a start's changed
    statuses, its proxy STARTING then RUNNING, may come closer, and the one after a change a whole
    interval after it, if the grid's next moment is near.)"""
    rpc = mesh(consul_double).rpc
    template = {"ttl": {"id": "ttl:{{id}}", "status": "passing", "ttl": 1000}}

    def updates(service_id, after=0.0):
        return [r.at for r in list(consul_double.request_log) if r.method == "PUT" and r.at > after
                and r.path == "/v1/agent/check/update/ttl:" + service_id]
    rpc.meshx.start("web", template, False, 0)
    wait_for(lambda: len(updates("web-node1")) >= 2, message="web's first updates")
    rpc.meshx.start("api", template, False, 0)
    wait_for(lambda: all(rpc.meshx.info(s)["state"] == "RUNNING" for s in ("web-node1", "api-node1")),
             message="both proxies RUNNING")
    settled = time.time() + 1.0  # the update after a changed status has joined the grid
    wait_for(lambda: len(updates("api-node1", settled)) >= 6, timeout=20, message="six regular updates")
    web, api = updates("web-node1", settled), updates("api-node1", settled)
    gaps = sorted(later - earlier for earlier, later in zip(web, web[1:]))
    assert 0.9 <= gaps[len(gaps) // 2] <= 1.1, gaps
    assert all(min(abs(at - other) for other in web) < 0.1 for at in api[-3:]), (web, api)


def test_ports_are_never_handed_out_twice(mesh, consul_agent, port_range):
    rpc = mesh(consul_agent).rpc
    low = port_range[0]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", low + 1))
        busy.listen()
        ports = [rpc.meshx.start("svc%d" % i)["port"] for i in range(3)]
    assert ports == [low, low + 2, low + 3]
    rpc.meshx.stop("svc1-node1")
    held = {low, low + 3}
    for i in range(3, 6):
        port = rpc.meshx.start("svc%d" % i)["port"]
        assert port not in held
        held.add(port)


def test_acl_token_is_sent_and_a_denial_is_reported_without_the_token(make_supervisord, tmp_path, port_range):
    from supervisor_meshx.testing.consul_double import ConsulDouble
    secret, weak = "9d6a2b7e-secret-token", "1f0c5a3d-weak-token"
    agent = ConsulDouble(acl_default_policy="deny", acl_tokens={
        secret: {"accessor": "acc-strong", "service_write": ["*"], "service_read": ["*"]},
        weak: {"accessor": "acc-weak", "service_write": ["other"], "service_read": ["*"]}})
    agent.start()
    template = tmp_path / "t.json"
    template.write_text(json.dumps({"proxy": ["sleep", "1000"]}))
    try:
        def server_with(token):
            return make_supervisord(meshx_options={
                "consul_http_addr": agent.http_addr, "node_name": NODE, "consul_http_token": token,
                "service_template": str(template), "port_range": "%d-%d" % free_port_range()})

        good = server_with(secret)
        assert good.rpc.meshx.start("web")["service_id"] == "web-node1"
        register = [r for r in agent.request_log if r.path == "/v1/agent/service/register"][-1]
        assert register.headers.get("X-Consul-Token") == secret
        assert secret not in repr(good.rpc.meshx.info("web-node1"))

        denied = server_with(weak)
        fault = fault_of(denied.rpc.meshx.start, "api")
        assert fault.faultCode == 1007
        assert fault.faultString.startswith("CONSUL_ERROR: 403 Permission denied")
        assert "acc-weak" in fault.faultString
        assert weak not in fault.faultString and weak not in denied.log()
        assert "api-node1" not in agent.services()
        assert denied.rpc.meshx.list() == []
    finally:
        agent.stop()


def test_agent_down_gives_a_clean_fault_and_leaves_nothing(mesh, consul_double, port_range):
    server = mesh(consul_double)
    rpc = server.rpc
    consul_double.stop()
    fault = fault_of(rpc.meshx.start, "web")
    assert fault.faultCode == 1006 and fault.faultString.startswith("CONSUL_UNAVAILABLE: ")
    consul_double.start()
    assert_nothing_left(server, consul_double, "web-node1")
    assert rpc.meshx.start("web")["port"] == port_range[0]  # the port was not kept


def test_an_agent_error_during_registration_leaves_nothing(mesh, consul_double):
    server = mesh(consul_double)
    consul_double.inject_errors(500, "rpc error: no leader", count=1, method="PUT",
                                path_prefix="/v1/agent/service/register")
    fault = fault_of(server.rpc.meshx.start, "web")
    assert fault.faultString == "CONSUL_ERROR: 500 rpc error: no leader"
    assert_nothing_left(server, consul_double, "web-node1")


def test_supervisord_keeps_answering_while_the_agent_is_slow(mesh, consul_double):
    server = mesh(consul_double)
    consul_double.latency = 1.0
    result = {}
    caller = threading.Thread(target=lambda: result.update(server.rpc.meshx.start("web")))
    caller.start()
    try:
        wait_for(lambda: consul_double.count_requests() > 0, message="the start to reach the agent")
        timings = []
        other = server.rpc
        while caller.is_alive() and len(timings) < 50:
            begun = time.monotonic()
            assert other.supervisor.getState()["statename"] == "RUNNING"
            timings.append(time.monotonic() - begun)
    finally:
        caller.join(30)
    assert result["service_id"] == "web-node1"
    assert len(timings) >= 5
    assert max(timings) < 0.1, timings
