"""What an operator meets with supervisorctl: avail/add/remove of proxy groups,
start right after a reload."""
import os
import signal
import textwrap
import xmlrpc.client

from consul_fixtures import *  # noqa: F401,F403
from supervisor_meshx.testing.consul_double import ConsulDouble
from supervisord_harness import wait_for
from test_services import fault_of, mesh  # noqa: F401


def avail(server):
    return [line.split()[0] for line in server.ctl("avail").stdout.splitlines() if line.strip()]


def test_proxy_groups_come_and_go_in_avail_with_their_service(mesh, consul_double):
    server = mesh(consul_double)
    server.rpc.meshx.start("web")
    assert "meshx-web-node1" in avail(server)  # no reread needed
    server.rpc.meshx.stop("web-node1")
    assert "meshx-web-node1" not in avail(server)
    added = server.ctl("add", "meshx-web-node1")
    assert "ERROR" in added.stdout and "meshx-web-node1" not in server.ctl("status").stdout
    assert server.rpc.meshx.start("web")["already_started"] is False


def test_a_program_in_the_files_named_like_a_proxy_group_is_ignored(mesh, consul_double):
    server = mesh(consul_double)
    with open(server.conf, "a") as f:
        f.write(textwrap.dedent("""
            [program:meshx-web-node1]
            command = sleep 1000
            autostart = false
            """))
    server.ctl("reread")
    assert "meshx-web-node1" not in avail(server)
    assert "ERROR" in server.ctl("add", "meshx-web-node1").stdout
    assert "reserved for proxy groups" in server.log()
    assert server.rpc.meshx.start("web")["service_id"] == "web-node1"


def test_a_removed_proxy_group_is_added_again(mesh, consul_double):
    server = mesh(consul_double)
    server.rpc.meshx.start("web")
    old_pid = server.rpc.meshx.info("web-node1")["pid"]
    assert server.ctl("stop", "meshx-web-node1").returncode == 0
    assert "removed" in server.ctl("remove", "meshx-web-node1").stdout
    info = wait_for(lambda: _info_running(server), message="the proxy group back")  # BAD_NAME until then
    assert info["pid"] != old_pid
    assert "was removed; the reconciler adds it again" in server.log()
    assert [row["proxy_state"] for row in server.rpc.meshx.status()] == ["RUNNING"]


def test_start_right_after_a_reload_answers_already_started(mesh, consul_double):
    server = mesh(consul_double, proxy_startsecs="1")
    first = server.rpc.meshx.start("web")
    assert server.ctl("reload").returncode == 0
    again = wait_for(lambda: _start(server), message="supervisord back")
    assert again == dict(first, already_started=True)


def _start(server):
    try:
        return server.rpc.meshx.start("web")
    except (OSError, xmlrpc.client.ProtocolError):
        return None
    except xmlrpc.client.Fault as fault:
        if fault.faultString.startswith("SHUTDOWN_STATE"):
            return None
        raise


def test_a_failed_start_keeps_the_proxys_last_words(mesh, consul_double):
    server = mesh(consul_double, proxy_startsecs="1")
    dying = {"proxy": ["sh", "-c", "echo 'listen tcp 127.0.0.1:21000: bind: address already in use' >&2; exit 3"]}
    fault = fault_of(server.rpc.meshx.start, "web", dying, False, 1500)
    assert fault.faultString.startswith("SERVICE_ALIVE_TIMEOUT: web-node1 not passing within 1500 ms")
    assert "last exit: exit status 3" in fault.faultString
    assert "bind: address already in use" in fault.faultString
    assert "bind: address already in use" in server.log()
    assert server.rpc.meshx.list() == [] and "meshx-web-node1" not in server.ctl("status").stdout


def test_restarts_by_cause_and_the_last_exit_survive_a_reload(mesh, consul_double):
    server = mesh(consul_double)
    rpc = server.rpc
    rpc.meshx.start("web")
    os.kill(rpc.meshx.info("web-node1")["pid"], signal.SIGKILL)
    info = wait_for(lambda: (lambda i: i if i["restarts"] == 1 and i["state"] == "RUNNING" else None)(
        rpc.meshx.info("web-node1")), message="one restart")
    assert info["restarts_by_cause"] == {"crash": 1, "health": 0}
    assert info["last_exit"] == "terminated by SIGKILL" and info["last_exit_at"] > 0
    assert info["spawnerr"] == "" and info["last_running_at"] >= info["last_exit_at"] - 1
    assert rpc.meshx.status()[0]["restarts_by_cause"] == {"crash": 1, "health": 0}

    assert server.ctl("reload").returncode == 0
    after = wait_for(lambda: _info_running(server), message="the proxy after the reload")
    assert (after["restarts"], after["restarts_by_cause"], after["last_exit"]) == \
        (1, {"crash": 1, "health": 0}, "terminated by SIGKILL")

    server.rpc.meshx.restart("web-node1")
    assert server.rpc.meshx.info("web-node1")["restarts_by_cause"] == {"crash": 0, "health": 0}


def _info_running(server):
    try:
        info = server.rpc.meshx.info("web-node1")
    except (OSError, xmlrpc.client.Fault, xmlrpc.client.ProtocolError):
        return None
    return info if info["state"] == "RUNNING" else None


def test_refused_ttl_updates_are_logged_once_when_they_start_and_once_when_they_end(mesh, consul_double):
    server = mesh(consul_double)
    server.rpc.meshx.start("web", {"ttl": {"id": "ttl:{{id}}", "status": "passing", "ttl": 200}})
    consul_double.inject_errors(500, "rpc error: no leader", path_prefix="/v1/agent/check/update")
    updates = consul_double.count_requests("PUT", "/v1/agent/check/update")
    wait_for(lambda: consul_double.count_requests("PUT", "/v1/agent/check/update") >= updates + 5,
             message="several refused updates")
    consul_double.clear_errors()
    wait_for(lambda: "accepts TTL updates again" in server.log(), message="the end of the refusals")
    assert server.log().count("refuses TTL updates") == 1
    assert server.log().count("accepts TTL updates again") == 1
    row = server.rpc.meshx.status()[0]
    assert (row["ttl_set"], row["ttl_status"]) == ("passing", "passing")


def test_an_unreadable_token_file_is_named(mesh, tmp_path):
    missing = tmp_path / "no-such-token"
    with ConsulDouble(acl_default_policy="deny") as agent:
        server = mesh(agent, consul_http_token_file=str(missing))
        fault = fault_of(server.rpc.meshx.start, "web")
        assert fault.faultString.startswith("CONSUL_ERROR: 403 Permission denied")
        assert "(the token file %s could not be read" % missing in fault.faultString
        wait_for(lambda: "the token file %s could not be read" % missing in server.log(), message="the warning")
        assert server.log().count("could not be read (") == 1
