"""The Consul double against the agent API reference (/work/shared/consul-agent-api.md).

Tests on ``consul_agent`` turn no knobs, so they hold for a real ``consul agent -dev`` as well.
"""

import json
import re
import socket
import threading
import time

import consul
import consul.base
import pytest
import requests

from consul_fixtures import *  # noqa: F401,F403  (consul_agent, consul_double)
from supervisor_meshx.testing.consul_double import ConsulDouble
from supervisord_harness import wait_for

ANONYMOUS = "00000000-0000-0000-0000-000000000002"


def put(agent, path, body=None, raw=None, **kwargs):
    data = raw if raw is not None else ("" if body is None else json.dumps(body))
    return requests.put(agent.url + path, data=data, timeout=10, **kwargs)


def get(agent, path, **kwargs):
    return requests.get(agent.url + path, timeout=10, **kwargs)


def services(agent):
    return get(agent, "/v1/agent/services").json()


def checks(agent):
    return get(agent, "/v1/agent/checks").json()



def check_status(agent, check_id):
    return checks(agent).get(check_id, {}).get("Status")


def register_ok(agent, body, **kwargs):
    response = put(agent, "/v1/agent/service/register", body, **kwargs)
    assert (response.status_code, response.text) == (200, ""), response.text
    return response


def assert_text_error(response, status, body):
    assert response.status_code == status
    assert response.text == body
    assert response.headers["Content-Type"].startswith("text/plain")


# -- registration ------------------------------------------------------------------------------------------------


def test_register_and_deregister_round_trip(consul_agent):
    response = register_ok(consul_agent, {"Name": "web", "ID": "web-1", "Port": 8080, "Tags": ["a"],
                                          "Meta": {"k": "v"}, "Address": "10.0.0.5"})
    assert "Content-Type" not in response.headers
    assert response.headers["X-Consul-Default-ACL-Policy"] == "allow"
    service = services(consul_agent)["web-1"]
    assert {key: service[key] for key in ("ID", "Service", "Tags", "Meta", "Port", "Address", "Weights")} == {
        "ID": "web-1", "Service": "web", "Tags": ["a"], "Meta": {"k": "v"}, "Port": 8080, "Address": "10.0.0.5",
        "Weights": {"Passing": 1, "Warning": 1}}
    assert "Kind" not in service and "Proxy" not in service
    assert service["TaggedAddresses"]["lan_ipv4"] == {"Address": "10.0.0.5", "Port": 8080}

    single = get(consul_agent, "/v1/agent/service/web-1")
    assert single.headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"[0-9a-f]{16}", single.json()["ContentHash"])
    assert single.headers["X-Consul-ContentHash"] == single.json()["ContentHash"]

    response = put(consul_agent, "/v1/agent/service/deregister/web-1")
    assert (response.status_code, response.text) == (200, "")
    assert "web-1" not in services(consul_agent)
    assert_text_error(get(consul_agent, "/v1/agent/service/web-1"), 404, "unknown service ID: web-1")
    assert_text_error(put(consul_agent, "/v1/agent/service/deregister/web-1"), 404,
                      'Unknown service ID "web-1". Ensure that the service ID is passed, not the service name.')


def test_keys_match_case_insensitively_and_re_registration_replaces(consul_agent):
    register_ok(consul_agent, {"name": "web", "ID": "web-2", "PORT": 81, "tags": ["x"], "enable_tag_override": True,
                               "meta": {"a": "b"}})
    service = services(consul_agent)["web-2"]
    assert (service["Service"], service["Port"], service["Tags"]) == ("web", 81, ["x"])
    assert service["EnableTagOverride"] is True
    register_ok(consul_agent, {"Name": "web", "ID": "web-2"})
    service = services(consul_agent)["web-2"]
    assert (service["Port"], service["Tags"], service["Meta"]) == (0, [], {})


@pytest.mark.parametrize("body, reason", [
    ({"Name": "web", "Bogus": 1}, 'Request decode failed: json: unknown field "Bogus"'),
    ({"Name": "web", "check": {"ID": "x", "TTL": "5s"}}, 'Request decode failed: json: unknown field "ID"'),
    ({"Name": "web", "Check": {"TTL": "soon"}}, 'Request decode failed: time: invalid duration "soon"'),
    ({"Port": 80}, "Missing service name"),
    ({"Name": "web", "Address": "0.0.0.0"}, "Invalid service address"),
    ({"Name": "web", "Meta": {"consul-x": "y"}},
     "Invalid Service Meta: Couldn't load metadata pair ('consul-x', 'y'): "
     "Key prefix 'consul-' is reserved for internal use"),
    ({"Name": "web", "Check": {"Interval": "10s"}}, "Invalid check: TTL must be > 0 for TTL checks"),
    ({"Name": "web", "Check": {"TTL": "5s", "Status": "up"}},
     "Status for checks must 'passing', 'warning', 'critical'"),
    ({"Name": "p", "Kind": "connect-proxy"},
     "Validation failed: 2 errors occurred:\n"
     "\t* Proxy.DestinationServiceName must be non-empty for Connect proxy services\n"
     "\t* Port or SocketPath must be set for a connect-proxy\n\n"),
])
def test_bad_registrations_get_400_with_the_go_error(consul_agent, body, reason):
    assert_text_error(put(consul_agent, "/v1/agent/service/register", body), 400, reason)
    assert services(consul_agent) == {}


def test_empty_and_broken_bodies(consul_agent):
    assert_text_error(put(consul_agent, "/v1/agent/service/register"), 400, "Request decode failed: EOF")
    assert_text_error(put(consul_agent, "/v1/agent/service/register", raw='{"Name": '), 400,
                      "Request decode failed: unexpected EOF")
    response = put(consul_agent, "/v1/agent/service/register", raw='{"Name": "web", "Port": "80"}')
    assert response.status_code == 400
    assert response.text.startswith("Request decode failed: json: cannot unmarshal string into Go ")


# -- sidecars ----------------------------------------------------------------------------------------------------


def test_sidecar_expansion_ports_and_default_checks(consul_agent):
    register_ok(consul_agent, {"Name": "web", "Port": 8080, "Connect": {"SidecarService": {}}})
    sidecar = services(consul_agent)["web-sidecar-proxy"]
    assert (sidecar["Kind"], sidecar["Service"], sidecar["Port"]) == ("connect-proxy", "web-sidecar-proxy", 21000)
    assert sidecar["Proxy"]["DestinationServiceName"] == "web"
    assert sidecar["Proxy"]["DestinationServiceID"] == "web"
    assert sidecar["Proxy"]["LocalServiceAddress"] == "127.0.0.1"
    assert sidecar["Proxy"]["LocalServicePort"] == 8080
    assert "Connect" not in services(consul_agent)["web"]

    found = checks(consul_agent)
    listening, aliasing = found["service:web-sidecar-proxy:1"], found["service:web-sidecar-proxy:2"]
    assert (listening["Name"], listening["Type"]) == ("Connect Sidecar Listening", "tcp")
    assert listening["Status"] == "critical"  # until the first probe, up to 10 s away
    assert (aliasing["Name"], aliasing["Type"]) == ("Connect Sidecar Aliasing web", "alias")
    assert listening["ServiceID"] == aliasing["ServiceID"] == "web-sidecar-proxy"

    register_ok(consul_agent, {"Name": "api", "Port": 9090, "connect": {"sidecar_service": {}}})
    assert services(consul_agent)["api-sidecar-proxy"]["Port"] == 21001
    register_ok(consul_agent, {"Name": "web", "Port": 8081, "Connect": {"SidecarService": {}}})
    assert services(consul_agent)["web-sidecar-proxy"]["Port"] == 21000  # reused on re-registration
    assert services(consul_agent)["web-sidecar-proxy"]["Proxy"]["LocalServicePort"] == 8081

    put(consul_agent, "/v1/agent/service/deregister/web")
    assert not {"web", "web-sidecar-proxy"} & set(services(consul_agent))
    assert not [c for c in checks(consul_agent) if c.startswith("service:web")]
    register_ok(consul_agent, {"Name": "db", "Port": 5432, "Connect": {"SidecarService": {}}})
    assert services(consul_agent)["db-sidecar-proxy"]["Port"] == 21000  # lowest free again


def test_sidecar_port_exhaustion_keeps_the_parent():
    with ConsulDouble(sidecar_port_range=(21000, 21000)) as agent:
        register_ok(agent, {"Name": "web", "Connect": {"SidecarService": {}}})
        assert_text_error(put(agent, "/v1/agent/service/register", {"Name": "api", "Connect": {"SidecarService": {}}}),
                          500, "no port provided for sidecar_service and none left in the configured range "
                               "[21000, 21000]")
        assert sorted(agent.services()) == ["api", "web", "web-sidecar-proxy"]


def test_alias_check_follows_the_parents_ttl_check(consul_agent):
    register_ok(consul_agent, {"Name": "web", "Port": 8080, "Check": {"TTL": "30s"},
                               "Connect": {"SidecarService": {}}})
    alias = "service:web-sidecar-proxy:2"
    assert check_status(consul_agent, alias) == "critical"
    put(consul_agent, "/v1/agent/check/pass/service:web")
    wait_for(lambda: checks(consul_agent)[alias]["Output"] == "All checks passing.", message="alias passing")
    assert check_status(consul_agent, alias) == "passing"
    put(consul_agent, "/v1/agent/check/fail/service:web", params={"note": "boom"})
    wait_for(lambda: check_status(consul_agent, alias) == "critical", message="alias critical")
    assert checks(consul_agent)[alias]["Output"] == "Aliased check \"Service 'web' check\" failing: boom"


# -- checks ------------------------------------------------------------------------------------------------------


def test_check_status_carries_over_re_registration(consul_agent):
    body = {"Name": "web", "Checks": [{"CheckID": "ttl:web", "TTL": "30s"}, {"TTL": "30s", "Name": "second"}]}
    register_ok(consul_agent, body)
    assert {c for c in checks(consul_agent)} == {"ttl:web", "service:web:2"}
    assert checks(consul_agent)["service:web:2"]["Name"] == "second"
    put(consul_agent, "/v1/agent/check/pass/ttl:web", params={"note": "fine"})
    register_ok(consul_agent, {"Name": "web", "Check": {"CheckID": "ttl:web", "TTL": "30s", "Status": "critical"}})
    kept = checks(consul_agent)
    assert (kept["ttl:web"]["Status"], kept["ttl:web"]["Output"]) == ("passing", "fine")
    assert "service:web:2" in kept  # old checks stay without replace-existing-checks

    register_ok(consul_agent, {"Name": "web", "Check": {"CheckID": "ttl:web", "TTL": "30s"}},
                params={"replace-existing-checks": "1"})  # only "" or "true" count
    assert "service:web:2" in checks(consul_agent)
    register_ok(consul_agent, {"Name": "web", "Check": {"CheckID": "ttl:web", "TTL": "30s"}},
                params={"replace-existing-checks": "true"})
    assert set(checks(consul_agent)) == {"ttl:web"}


def test_ttl_updates_and_expiry(consul_agent):
    register_ok(consul_agent, {"Name": "web", "Check": {"CheckID": "ttl:web", "TTL": "1s"}})
    for op, status in (("pass", "passing"), ("warn", "warning"), ("fail", "critical")):
        response = put(consul_agent, "/v1/agent/check/%s/ttl:web" % op, params={"note": op})
        assert (response.status_code, response.text) == (200, "")
        assert (checks(consul_agent)["ttl:web"]["Status"], checks(consul_agent)["ttl:web"]["Output"]) == (status, op)
    put(consul_agent, "/v1/agent/check/pass/ttl:web")
    assert checks(consul_agent)["ttl:web"]["Output"] == ""  # no note clears the output

    assert put(consul_agent, "/v1/agent/check/update/ttl:web", {"status": "passing", "output": "ok"}).status_code == 200
    assert checks(consul_agent)["ttl:web"]["Output"] == "ok"
    wait_for(lambda: check_status(consul_agent, "ttl:web") == "critical", message="TTL expiry")
    assert checks(consul_agent)["ttl:web"]["Output"] == "TTL expired (last output before timeout follows): ok"

    assert_text_error(put(consul_agent, "/v1/agent/check/update/ttl:web", {"Status": "maintenance"}), 400,
                      "Invalid check status: 'maintenance'")
    assert_text_error(put(consul_agent, "/v1/agent/check/update/nope", {"Status": "passing"}), 404,
                      'Unknown check ID "nope". Ensure that the check ID is passed, not the check name.')
    assert_text_error(put(consul_agent, "/v1/agent/check/update/ttl:web", {"Status": "passing", "Note": "x"}), 400,
                      'Request decode failed: json: unknown field "Note"')


def test_status_updates_on_a_check_without_ttl_are_500(consul_agent):
    register_ok(consul_agent, {"Name": "web", "Check": {"AliasService": "elsewhere"}})
    assert_text_error(put(consul_agent, "/v1/agent/check/pass/service:web"), 500,
                      'CheckID "service:web" does not have associated TTL')


def test_check_register_and_deregister(consul_agent):
    assert_text_error(put(consul_agent, "/v1/agent/check/register", {"Name": "c", "CheckID": "x", "TTL": "5s"}), 400,
                      'Request decode failed: json: unknown field "CheckID"')
    assert_text_error(put(consul_agent, "/v1/agent/check/register", {"Name": "c", "TTL": "5s", "ServiceID": "nope"}),
                      404, 'ServiceID "nope" does not exist')
    register_ok(consul_agent, {"Name": "web"})
    response = put(consul_agent, "/v1/agent/check/register", {"name": "c", "id": "web-ttl", "ttl": "5s",
                                                              "serviceid": "web", "status": "warning"})
    assert (response.status_code, response.text) == (200, "")
    check = checks(consul_agent)["web-ttl"]
    assert (check["Status"], check["ServiceID"], check["Type"]) == ("warning", "web", "ttl")
    assert put(consul_agent, "/v1/agent/check/deregister/web-ttl").status_code == 200
    assert_text_error(put(consul_agent, "/v1/agent/check/deregister/web-ttl"), 404,
                      'Unknown check ID "web-ttl". Ensure that the check ID is passed, not the check name.')


# -- health ------------------------------------------------------------------------------------------------------


def health(agent, service_id, text=False):
    return get(agent, "/v1/agent/health/service/id/" + service_id, params={"format": "text"} if text else None)


def test_node_checks_count_for_every_service(consul_agent):
    register_ok(consul_agent, {"Name": "web"})
    assert put(consul_agent, "/v1/agent/check/register", {"Name": "node ttl", "TTL": "30s"}).status_code == 200
    assert checks(consul_agent)["node ttl"]["ServiceID"] == ""
    assert health(consul_agent, "web", text=True).text == "critical"
    put(consul_agent, "/v1/agent/check/warn/node ttl")
    assert health(consul_agent, "web", text=True).status_code == 429


def test_health_codes_reasons_and_formats(consul_agent):
    register_ok(consul_agent, {"Name": "bare"})
    response = health(consul_agent, "bare")
    assert (response.status_code, response.headers["X-Consul-Reason"]) == (200, "passing")
    assert response.json()["AggregatedStatus"] == "passing" and response.json()["Checks"] == []

    register_ok(consul_agent, {"Name": "web", "Check": {"CheckID": "ttl:web", "TTL": "30s"}})
    expected = {"fail": (503, "critical"), "warn": (429, "warning"), "pass": (200, "passing")}
    assert (health(consul_agent, "web", text=True).status_code, health(consul_agent, "web", text=True).text) == \
        (503, "critical")
    for op, (code, word) in expected.items():
        put(consul_agent, "/v1/agent/check/%s/ttl:web" % op)
        response = health(consul_agent, "web", text=True)
        assert (response.status_code, response.text, response.headers["X-Consul-Reason"]) == (code, word, word)
        assert response.headers["Content-Type"].startswith("text/plain")
    response = get(consul_agent, "/v1/agent/health/service/id/web", headers={"Accept": "text/plain"})
    assert response.text == "passing"

    put(consul_agent, "/v1/agent/service/maintenance/web", params={"enable": "true", "reason": "upgrade"})
    response = health(consul_agent, "web", text=True)
    assert (response.status_code, response.text) == (503, "maintenance")
    put(consul_agent, "/v1/agent/service/maintenance/web", params={"enable": "false"})
    assert health(consul_agent, "web").status_code == 200

    response = health(consul_agent, "nope")
    assert (response.status_code, response.headers["X-Consul-Reason"]) == (404, "ServiceId nope not found")
    assert response.json() == {"AggregatedStatus": "critical", "Service": None, "Checks": None}
    response = health(consul_agent, "nope", text=True)
    assert (response.status_code, response.text) == (404, "ServiceId nope not found")

    by_name = get(consul_agent, "/v1/agent/health/service/name/web")
    assert by_name.status_code == 200 and [entry["Service"]["ID"] for entry in by_name.json()] == ["web"]
    missing = get(consul_agent, "/v1/agent/health/service/name/nope")
    assert (missing.status_code, missing.json(), missing.headers["X-Consul-Reason"]) == \
        (404, [], "ServiceName nope Not Found")


# -- HTTP semantics ----------------------------------------------------------------------------------------------


def test_blocking_service_query(consul_agent):
    register_ok(consul_agent, {"Name": "web", "Port": 80})
    first = get(consul_agent, "/v1/agent/service/web").json()["ContentHash"]
    started = time.monotonic()
    same = get(consul_agent, "/v1/agent/service/web", params={"hash": first, "wait": "1s"})
    assert time.monotonic() - started >= 0.9 and same.json()["ContentHash"] == first
    assert_text_error(get(consul_agent, "/v1/agent/service/web", params={"hash": first, "wait": "soon"}), 400,
                      "Invalid wait time")

    answers = []
    waiter = threading.Thread(target=lambda: answers.append(
        get(consul_agent, "/v1/agent/service/web", params={"hash": first, "wait": "10s"})))
    waiter.start()
    register_ok(consul_agent, {"Name": "web", "Port": 81})
    waiter.join(10)
    assert answers[0].json()["Port"] == 81 and answers[0].json()["ContentHash"] != first


def test_wrong_method_options_and_unknown_paths(consul_agent):
    response = requests.post(consul_agent.url + "/v1/agent/service/register", data="{}", timeout=10)
    assert_text_error(response, 405, "method POST not allowed")
    assert response.headers["Allow"] == "OPTIONS,PUT"
    response = requests.post(consul_agent.url + "/v1/agent/services", timeout=10)
    assert (response.status_code, response.headers["Allow"]) == (405, "OPTIONS,GET")
    response = requests.options(consul_agent.url + "/v1/agent/checks", timeout=10)
    assert (response.status_code, response.text, response.headers["Allow"]) == (200, "", "OPTIONS,GET")
    response = get(consul_agent, "/v1/agent/nonsense")
    assert (response.status_code, response.text) == (404, "Invalid URL path: not a recognized HTTP API endpoint\n")


def test_filters(consul_agent):
    register_ok(consul_agent, {"Name": "web", "Port": 8080, "Tags": ["blue"], "Meta": {"team": "a"},
                               "Connect": {"SidecarService": {}}})
    register_ok(consul_agent, {"Name": "db", "Port": 5432, "Tags": ["green"]})

    def ids(expression):
        response = get(consul_agent, "/v1/agent/services", params={"filter": expression})
        assert response.status_code == 200, response.text
        return sorted(response.json())

    assert ids('Kind == "connect-proxy"') == ["web-sidecar-proxy"]
    assert ids('Service == "web" or Port == 5432') == ["db", "web"]
    assert ids('"green" in Tags') == ["db"]
    assert ids('Tags contains "blue" and not Meta.team != "a"') == ["web", "web-sidecar-proxy"]
    assert ids('Proxy.DestinationServiceName == "web"') == ["web-sidecar-proxy"]
    response = get(consul_agent, "/v1/agent/services", params={"filter": "Kind == connect-proxy"})
    assert response.status_code == 500
    assert response.text.startswith("Failed to create boolean expression evaluator: ")


def test_self(consul_agent):
    config = get(consul_agent, "/v1/agent/self").json()["Config"]
    assert (config["NodeName"], config["Datacenter"]) == ("node1", "dc1")


# -- python-consul2 against the agent ----------------------------------------------------------------------------


def client(agent, token=None):
    return consul.Consul(host="127.0.0.1", port=agent.port, token=token)


def test_python_consul2_against_the_agent(consul_agent):
    c = client(consul_agent)
    assert c.agent.service.register("web", service_id="web-1", port=80, tags=["t"], check=consul.Check.ttl("30s"))
    assert c.agent.services()["web-1"]["Tags"] == ["t"]
    assert c.agent.check.ttl_pass("service:web-1", notes="up")
    assert c.agent.checks()["service:web-1"]["Status"] == "passing"
    assert c.agent.service.deregister("nope") is False  # 404 is not an exception
    assert c.agent.check.ttl_pass("nope") is False
    # CB.json() answers a 404 with (X-Consul-Index, None), not None
    assert c.http.get(consul.base.CB.json(), "/v1/agent/service/nope") == (None, None)
    with pytest.raises(consul.base.BadRequest):
        c.agent.service.register("web", meta={"consul-x": "y"})
    assert c.agent.service.register("web-alias", check={"AliasService": "web-1"})
    with pytest.raises(consul.ConsulException) as raised:
        c.agent.check.ttl_pass("service:web-alias")
    assert str(raised.value).startswith("500 ")
    assert c.agent.service.deregister("web-1")


# -- knobs of the double -----------------------------------------------------------------------------------------


def test_latency_delays_every_answer(consul_double):
    consul_double.latency = 0.3
    started = time.monotonic()
    assert get(consul_double, "/v1/agent/services").status_code == 200
    assert time.monotonic() - started >= 0.3
    consul_double.latency = 0


def test_injected_errors_then_normal_service(consul_double):
    consul_double.inject_errors(500, "rpc error: no leader", count=2, method="PUT",
                                path_prefix="/v1/agent/service/register")
    assert get(consul_double, "/v1/agent/services").status_code == 200  # does not match
    for _ in range(2):
        assert_text_error(put(consul_double, "/v1/agent/service/register", {"Name": "web"}), 500,
                          "rpc error: no leader")
    register_ok(consul_double, {"Name": "web"})
    assert consul_double.count_requests("PUT", "/v1/agent/service/register") == 3
    logged = [r for r in consul_double.request_log if r.method == "PUT"][-1]
    assert json.loads(logged.body) == {"Name": "web"} and logged.path == "/v1/agent/service/register"

    consul_double.inject_errors(503, path_prefix="/v1/agent/checks")
    assert [get(consul_double, "/v1/agent/checks").text for _ in range(2)] == ["injected", "injected"]
    consul_double.clear_errors()
    assert get(consul_double, "/v1/agent/checks").status_code == 200


def test_stop_and_start_keep_port_and_state(consul_double):
    register_ok(consul_double, {"Name": "web"})
    port = consul_double.port
    consul_double.stop()
    with pytest.raises(requests.ConnectionError):
        get(consul_double, "/v1/agent/services")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    consul_double.start()
    assert consul_double.port == port
    assert list(services(consul_double)) == ["web"]
    assert consul_double.service("web")["Service"] == "web"


def test_wipe_forgets_everything(consul_double):
    register_ok(consul_double, {"Name": "web", "Check": {"TTL": "30s"}, "Connect": {"SidecarService": {}}})
    consul_double.wipe()
    assert services(consul_double) == {} and checks(consul_double) == {}
    assert consul_double.services() == {} and consul_double.service("web") is None


def test_acl_deny_and_an_allowed_token():
    secret = "3f1e7a52-secret"
    with ConsulDouble(acl_default_policy="deny", acl_tokens={
            secret: {"accessor": "acc-web", "service_write": ["web"], "service_read": ["*"]}}) as agent:
        response = put(agent, "/v1/agent/service/register", {"Name": "web"})
        assert_text_error(response, 403, "Permission denied: token with AccessorID '%s' lacks permission "
                                         "'service:write' on \"web\"" % ANONYMOUS)
        assert response.headers["X-Consul-Default-ACL-Policy"] == "deny"
        assert_text_error(put(agent, "/v1/agent/service/register", {"Name": "web"},
                              headers={"X-Consul-Token": "unknown"}), 403, "ACL not found")
        register_ok(agent, {"Name": "web"}, headers={"X-Consul-Token": secret})
        assert_text_error(put(agent, "/v1/agent/service/register", {"Name": "api"},
                              headers={"X-Consul-Token": secret}), 403,
                          "Permission denied: token with AccessorID 'acc-web' lacks permission "
                          "'service:write' on \"api\"")
        assert get(agent, "/v1/agent/services").json() == {}  # anonymous reads nothing
        assert list(get(agent, "/v1/agent/services", headers={"Authorization": "Bearer " + secret}).json()) == ["web"]
        assert_text_error(put(agent, "/v1/agent/service/deregister/web"), 403,
                          "Permission denied: token with AccessorID '%s' lacks permission "
                          "'service:write' on \"web\"" % ANONYMOUS)
        assert put(agent, "/v1/agent/service/deregister/nope").status_code == 404  # existence first

        with pytest.raises(consul.ACLPermissionDenied):
            client(agent).agent.service.register("web")
        with pytest.raises(consul.ACLPermissionDenied):
            client(agent).agent.self()
        assert client(agent, token=secret).agent.service.deregister("web")
