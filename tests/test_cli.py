"""`supervisorctl meshx ...` and `supervisor-meshx ...` against a real supervisord."""
import json
import subprocess
import sys

import pytest
import requests

from consul_fixtures import *  # noqa: F401,F403
from supervisord_harness import wait_for

CTLPLUGIN = """
[ctlplugin:meshx]
supervisor.ctl_factory = supervisor_meshx.controllerplugin:make_meshx_controllerplugin
"""


@pytest.fixture
def server(make_supervisord, consul_double, tmp_path, port_range, sidecar_port_range):
    template = tmp_path / "t.json"
    template.write_text(json.dumps({"proxy": ["sleep", "1000"]}))
    return make_supervisord(extra_config=CTLPLUGIN, meshx_options={
        "consul_http_addr": consul_double.http_addr, "node_name": "node1",
        "service_template": str(template), "port_range": "%d-%d" % port_range,
        "sidecar_port_range": "%d-%d" % sidecar_port_range})


def standalone(server, *args):
    return subprocess.run([sys.executable, "-m", "supervisor_meshx.cli", "-c", server.conf] + list(args),
                          capture_output=True, text=True, timeout=30)


@pytest.fixture(params=["supervisorctl", "supervisor-meshx"])
def meshx(request, server):
    """Runs one meshx command through either front end."""
    if request.param == "supervisorctl":
        return lambda *args: server.ctl("meshx", *args)
    return lambda *args: standalone(server, *args)


def test_a_session(meshx, port_range):
    started = meshx("start", "web")
    assert started.returncode == 0, started.stdout + started.stderr
    assert started.stdout.strip() == "web-node1 started at 127.0.0.1:%d" % port_range[0]
    assert meshx("start", "web").stdout.strip().startswith("web-node1 already started")

    assert meshx("list").stdout.split() == ["web-node1"]
    info = meshx("info", "web-node1").stdout
    assert "state: RUNNING" in info and "restarts: 0" in info
    status = meshx("status")
    assert status.returncode == 0
    [line] = status.stdout.splitlines()
    assert line.split() == ["web-node1", "127.0.0.1:%d" % port_range[0], "RUNNING", "restarts", "0",
                            "ttl", "passing"]
    assert meshx("ttl", "web-node1", "warning").stdout.startswith("web-node1 warning")
    wait_for(lambda: meshx("ttl", "web-node1").stdout.strip() == "web-node1 warning",
             message="Consul told the new status")
    assert '"Service": "web"' in meshx("config", "web-node1").stdout
    assert meshx("restart", "web-node1").stdout.strip() == "web-node1 restarted"

    connected = meshx("connect", "db", "cache")
    assert connected.returncode == 0
    assert [l.split()[0] for l in connected.stdout.splitlines()] == ["db", "cache"]
    assert meshx("upstreams").stdout.split() == ["db", "cache"]
    assert meshx("disconnect", "db").stdout.strip() == "disconnected: db"

    assert meshx("maintenance", "web-node1", "on", "--reason", "upgrade").stdout.strip() == "web-node1 maintenance on"
    assert meshx("maintenance", "web-node1", "off").stdout.strip() == "web-node1 maintenance off"
    assert meshx("stop", "web-node1", "--drain", "0.2").stdout.strip() == "web-node1 stopped"


def test_json_output_parses(meshx, port_range):
    assert json.loads(meshx("start", "web", "--json").stdout)["port"] == port_range[0]
    rows = json.loads(meshx("status", "--json").stdout)
    assert rows[0]["service_id"] == "web-node1" and rows[0]["proxy_state"] == "RUNNING"
    assert json.loads(meshx("list", "--json").stdout) == ["web-node1"]
    assert json.loads(meshx("info", "web-node1", "--json").stdout)["group"] == "meshx-web-node1"


def test_faults_print_error_and_fail(meshx):
    result = meshx("stop", "nobody-node1")
    assert result.stdout.strip().startswith("ERROR: SERVICE_NOT_OWNED: nobody-node1")
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == 1
    assert meshx("info", "nobody").returncode == 1


def test_bad_arguments_print_usage(meshx):
    for args in (("start",), ("ttl", "web-node1", "sunny"), ("frobnicate",), ("start", "web", "--timeout", "x")):
        result = meshx(*args)
        assert result.returncode == 2, args
        assert "usage:" in result.stdout, args


def test_help(server):
    assert "meshx" in server.ctl("help").stdout
    help_meshx = server.ctl("help", "meshx").stdout
    for command in ("start", "stop", "info", "restart", "list", "config", "ttl", "connect",
                    "disconnect", "upstreams", "status"):
        assert command in help_meshx
    assert "--force" in server.ctl("meshx", "help", "start").stdout
    assert "--restart" in standalone(server, "help", "disconnect").stdout


def test_standalone_with_a_server_url(server):
    result = subprocess.run([sys.executable, "-m", "supervisor_meshx.cli", "-s", "unix://" + server.socket, "list"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == "no services"


def test_messages_say_what_to_do(server, consul_double, meshx):
    assert "*** No help on meshx" not in server.ctl("help", "meshx").stdout
    helped = standalone(server, "--help")
    assert helped.returncode == 0
    assert all(flag in helped.stdout for flag in ("-c FILE", "-s URL", "-u USER", "-p PASSWORD", "start"))
    requests.put(consul_double.url + "/v1/agent/service/register", json={"Name": "db", "ID": "db-node1"}, timeout=5)
    taken = meshx("start", "db").stdout
    assert "--force" in taken and "force=true" not in taken
    gone = subprocess.run([sys.executable, "-m", "supervisor_meshx.cli", "-s", "unix:///nonexistent.sock", "list"],
                          capture_output=True, text=True, timeout=30)
    assert gone.returncode == 7 and "unix:///nonexistent.sock" in gone.stdout
