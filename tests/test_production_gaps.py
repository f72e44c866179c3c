"""Where a real host and a real agent differ from the double: the proxies' way to
the agent, Envoy admin ports, templates the agent refuses, an agent without a
leader yet, ids Consul confuses, the allowlist, oversized input, secrets."""
import json
import os
import signal
import sys
import time

import pytest
import requests

from consul_fixtures import *  # noqa: F401,F403
from supervisor_meshx.testing.consul_double import ConsulDouble
from supervisord_harness import Supervisord, wait_for
from test_services import agent_services, assert_nothing_left, fault_of, mesh  # noqa: F401


def environment_of(pid):
    """The environment ``pid`` was started with: once it runs its own program, not the copy of
    supervisord's that it holds between supervisord's fork and its exec."""
    def execd():
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"supervisor" not in f.read()
    wait_for(execd, message="the proxy's exec")
    with open("/proc/%d/environ" % pid, "rb") as f:
        return dict(e.decode().split("=", 1) for e in f.read().split(b"\0") if b"=" in e)


def test_proxies_reach_the_agent_as_the_plugin_does(mesh, consul_double, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    cacert = tmp_path / "ca.pem"
    server = mesh(consul_double, consul_http_token_file=str(token_file), consul_cacert=str(cacert),
                  proxy_environment='CONSUL_CACERT="/etc/other-ca.pem"')
    server.rpc.meshx.start("web")
    env = environment_of(server.rpc.meshx.info("web-node1")["pid"])
    assert env["CONSUL_HTTP_ADDR"] == "http://" + consul_double.http_addr
    assert env["CONSUL_HTTP_TOKEN_FILE"] == str(token_file)
    assert "CONSUL_HTTP_TOKEN" not in env
    assert env["CONSUL_CACERT"] == "/etc/other-ca.pem"  # proxy_environment wins
    assert env["MESHX_SERVICE_ID"] == "web-node1"
    assert "s3cret-token" not in server.log()


def test_each_sidecar_gets_its_own_admin_port(mesh, consul_double):
    server = mesh(consul_double)
    template = {"proxy": ["sleep", "{{admin_port}}"]}
    server.rpc.meshx.start("web", template)
    server.rpc.meshx.start("api", template)
    rows = {row["service_id"]: row for row in server.rpc.meshx.status()}
    admin = {sid: row["admin_port"] for sid, row in rows.items()}
    assert len(set(admin.values())) == 2 and all(19000 <= p <= 19999 for p in admin.values())
    for sid in rows:
        assert server.rpc.meshx.info(sid)["cmd"] == ["sleep", str(admin[sid])]
        assert server.rpc.meshx.info(sid)["admin_port"] == admin[sid]
        assert rows[sid]["sidecar_port"] == agent_services(consul_double)[sid + "-sidecar-proxy"]["Port"]


def test_a_registration_the_agent_refuses_is_a_bad_template(mesh, consul_agent):
    server = mesh(consul_agent)
    template = {"registration": {"Name": "{{name}}", "Weights": {"Passing": 0},
                                 "Checks": [{"CheckID": "ttl:{{id}}", "TTL": "10s"}]}}
    fault = fault_of(server.rpc.meshx.start, "web", template)
    assert fault.faultString.startswith("BAD_TEMPLATE: the Consul agent refused the registration: 400 ")
    assert "Passing must be greater than 0" in fault.faultString
    assert_nothing_left(server, consul_agent, "web-node1")


def test_an_agent_without_a_leader_yet_is_asked_again(mesh, consul_double):
    server = mesh(consul_double)
    consul_double.not_ready_for(1.0)
    assert server.rpc.meshx.start("web", {}, False, 5000)["service_id"] == "web-node1"
    assert "web-node1-sidecar-proxy" in agent_services(consul_double)


def test_an_id_differing_only_in_case_is_refused(mesh, consul_double):
    server = mesh(consul_double)
    server.rpc.meshx.start("web")
    fault = fault_of(server.rpc.meshx.start, {"name": "web", "id": "Web-Node1"})
    assert fault.faultString.startswith("BAD_NAME: Web-Node1 differs only in case from web-node1")
    assert "Web-Node1" not in agent_services(consul_double)
    requests.put(consul_double.url + "/v1/agent/service/register", json={"Name": "db", "ID": "DB-node1"},
                 timeout=5)  # someone else's, just now
    fault = fault_of(server.rpc.meshx.start, "db")
    assert fault.faultString.startswith("BAD_NAME: db-node1 differs only in case from DB-node1")


def _script(path, body):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def test_a_symlink_swapped_under_an_allowed_program_runs_nothing_else(make_supervisord, tmp_path):
    good, evil = tmp_path / "good", tmp_path / "evil"
    good.mkdir()
    evil.mkdir()
    owned = tmp_path / "owned"
    _script(good / "proxy", "exec sleep 1000\n")
    _script(evil / "proxy", "touch %s\nexec sleep 1000\n" % owned)
    current = tmp_path / "current"
    current.symlink_to(good)
    server = make_supervisord(meshx_options={"proxy_executables": str(current / "proxy"),
                                             "proxy_backoff_seconds": "0"})
    rpc = server.rpc
    assert rpc.meshx.startProxy("p", [str(current / "proxy")]) is True
    assert rpc.meshx.info("p")["state"] in ("STARTING", "RUNNING")

    current.unlink()
    current.symlink_to(evil)  # re-pointed: the allowed path is now another program
    pid = wait_for(lambda: rpc.meshx.info("p")["pid"])
    os.kill(pid, signal.SIGKILL)  # the automatic restart must not run it
    wait_for(lambda: "not allowed by proxy_executables any more" in rpc.meshx.info("p")["spawnerr"],
             message="the restart refused")
    assert not owned.exists()


def test_the_default_allowlist_pins_consul_to_connect(make_supervisord, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "consul", "exec sleep 1000\n")
    server = make_supervisord(meshx_options={
        "proxy_executables": "consul connect, envoy",
        "proxy_environment": 'PATH="%s:/usr/bin:/bin"' % bin_dir})
    rpc = server.rpc
    for cmd in (["consul", "lock", "x", "touch", str(tmp_path / "owned")], ["consul", "exec", "id"], ["consul"]):
        assert fault_of(rpc.meshx.startProxy, "p", cmd).faultString.startswith("COMMAND_NOT_ALLOWED: ")
    assert rpc.meshx.startProxy("p", ["consul", "connect", "proxy", "-sidecar-for", "p"]) is True
    assert rpc.meshx.info("p")["cmd"] == ["consul", "connect", "proxy", "-sidecar-for", "p"]
    assert not (tmp_path / "owned").exists()


def test_oversized_input_is_refused_before_any_work(mesh, consul_double):
    server = mesh(consul_double)
    rpc = server.rpc
    huge = "x" * (1024 * 1024)
    cases = [
        (rpc.meshx.startProxy, ("p", ["sleep", huge]), "longer than 4096 characters"),
        (rpc.meshx.startProxy, ("p", ["sleep"] * 1000), "more than 128 arguments"),
        (rpc.meshx.start, ({"name": "web", "blob": huge},), "service is larger than"),
        (rpc.meshx.start, ("web", {"proxy": ["sleep", "1"], "x": [huge]}), "template is larger than"),
        (rpc.meshx.startMany, ([{"name": "s%d" % i, "pad": "y" * 4000} for i in range(600)],),
         "services is larger than"),
        (rpc.meshx.connect, (["db"] * 1001,), "at most 1000"),
    ]
    for call, args, reason in cases:
        fault = fault_of(call, *args)
        assert fault.faultString.startswith("BAD_ARGUMENTS: ") and reason in fault.faultString, fault.faultString
    assert rpc.supervisor.getState()["statename"] == "RUNNING"
    assert rpc.meshx.list() == [] and "meshx-p" not in server.ctl("status").stdout


def test_a_secret_in_the_agent_address_is_never_shown(tmp_path):
    server = Supervisord(meshx_options={"consul_http_addr": "http://user:s3cret-pw@127.0.0.1:8500/"})
    try:
        with pytest.raises(AssertionError) as caught:
            server.start()
        assert "s3cret-pw" not in str(caught.value)
        assert "consul_http_addr must be" in server.log() and "s3cret-pw" not in server.log()
    finally:
        server.stop()


@pytest.mark.parametrize("options, reason", [
    ({"port_range": "21500-22500"}, "port_range 21500-22500 overlaps sidecar_port_range 21000-21999"),
    ({"state_file": "/"}, "state_file / is a directory"),
])
def test_a_bad_configuration_says_why_on_the_terminal(options, reason):
    server = Supervisord(meshx_options=options)
    try:
        with pytest.raises(AssertionError) as caught:
            server.start()
        assert "Error: meshx: " + reason in str(caught.value)
        assert reason in server.log() and "Traceback" not in server.log()
    finally:
        server.stop()


def test_a_missing_allowed_program_is_a_warning(make_supervisord):
    server = make_supervisord(meshx_options={"proxy_executables": "sleep, /nonexistent/envoy"})
    assert "proxy_executables: /nonexistent/envoy is not an executable file" in server.log()
    assert server.rpc.meshx.startProxy("p", ["sleep", "1000"]) is True


def test_a_service_with_its_own_token(mesh, tmp_path):
    plugin_token, web_token = "plugin-0000-secret", "web-1111-secret"
    web_token_file = tmp_path / "web.token"
    web_token_file.write_text(web_token + "\n")
    with ConsulDouble(acl_default_policy="deny", acl_tokens={
            plugin_token: {"accessor": "acc-plugin", "service_write": ["upstream*"], "service_read": ["*"]},
            web_token: {"accessor": "acc-web", "service_write": ["web*"], "service_read": ["*"]}}) as agent:
        server = mesh(agent, consul_http_token=plugin_token,
                      service_template=_write(tmp_path / "t.json", {"proxy": ["sleep", "1000"],
                                                                    "ttl": {"id": "ttl:{{id}}", "ttl": 200}}))
        denied = fault_of(server.rpc.meshx.start, "web")
        assert denied.faultString.startswith("CONSUL_ERROR: 403 Permission denied")
        before = len(agent.request_log)
        server.rpc.meshx.start({"name": "web", "token_file": str(web_token_file)})
        wait_for(lambda: agent.count_requests("PUT", "/v1/agent/check/update/ttl:web-node1") >= 2)
        for request in agent.request_log[before:]:
            if "web-node1" in request.path and request.method == "PUT":
                assert request.headers.get("X-Consul-Token") == web_token, request
        env = environment_of(server.rpc.meshx.info("web-node1")["pid"])
        assert env["CONSUL_HTTP_TOKEN_FILE"] == str(web_token_file) and "CONSUL_HTTP_TOKEN" not in env
        server.rpc.meshx.stop("web-node1")
        deregister = [r for r in agent.request_log[before:] if r.path == "/v1/agent/service/deregister/web-node1"]
        assert deregister and all(r.headers.get("X-Consul-Token") == web_token for r in deregister)
        state = open(os.path.join(server.dir, "supervisord.meshx.json")).read()
        for secret in (plugin_token, web_token):
            assert secret not in server.log() and secret not in state


def test_a_token_file_that_holds_no_token_is_refused(mesh, consul_double):
    server = mesh(consul_double)
    fault = fault_of(server.rpc.meshx.start, {"name": "web", "token_file": "/etc/passwd"})
    assert fault.faultString == ("BAD_ARGUMENTS: the token file /etc/passwd holds no token "
                                 "(one line, at most 512 printable characters)")
    assert "root:" not in server.log()


def _write(path, value):
    path.write_text(json.dumps(value))
    return str(path)


def test_proxy_executables_entries():
    from supervisor_meshx.executables import parse
    assert parse("consul connect, envoy") == (("consul", "connect"), ("envoy",))
    assert parse("consul envoy") == (("consul",), ("envoy",))  # no commas: programs, as before pinning
    assert parse("sleep,\n  /opt/bin/proxy -x") == (("sleep",), ("/opt/bin/proxy", "-x"))
