"""meshx proxy groups, against a real supervisord with the plugin loaded."""
import json
import os
import signal
import sys
import time
import xmlrpc.client

import pytest

from supervisord_harness import wait_for

SLEEP = ["sleep", "1000"]


def info_when(rpc, service_id, **expected):
    """Poll meshx.info until every expected field has its value; return the info."""
    def matches():
        info = rpc.meshx.info(service_id)
        return info if all(info[k] == v for k, v in expected.items()) else None
    return wait_for(matches, message="%s to have %r" % (service_id, expected))


def fault_of(call, *args):
    with pytest.raises(xmlrpc.client.Fault) as caught:
        call(*args)
    return caught.value


def test_start_reports_the_proxy_and_supervisorctl_shows_it(supervisord):
    rpc = supervisord.rpc
    assert rpc.meshx.startProxy("web-node1", ["sh", "-c", "echo proxy-says-hello; exec sleep 1000"]) is True

    info = info_when(rpc, "web-node1", state="RUNNING")
    assert info["cmd"] == ["sh", "-c", "echo proxy-says-hello; exec sleep 1000"]
    assert info["restarts"] == 0
    assert info["group"] == "meshx-web-node1"
    assert info["pid"] > 0
    os.kill(info["pid"], 0)

    status = supervisord.ctl("status")
    assert "meshx-web-node1" in status.stdout and "RUNNING" in status.stdout
    tail = wait_for(lambda: "proxy-says-hello" in supervisord.ctl("tail", "meshx-web-node1").stdout,
                    message="proxy output in supervisorctl tail")
    assert tail


def test_supervisord_restarts_a_killed_proxy_and_counts_it(supervisord):
    rpc = supervisord.rpc
    rpc.meshx.startProxy("web-node1", SLEEP)
    for expected in (1, 2):
        pid = info_when(rpc, "web-node1", state="RUNNING")["pid"]
        os.kill(pid, signal.SIGKILL)
        info = wait_for(lambda: (lambda i: i if i["state"] == "RUNNING" and i["pid"] != pid else None)(
            rpc.meshx.info("web-node1")), message="a new proxy pid")
        assert info["restarts"] == expected


def test_restart_gives_a_new_process_and_resets_the_count(supervisord):
    rpc = supervisord.rpc
    rpc.meshx.startProxy("web-node1", SLEEP)
    pid = info_when(rpc, "web-node1", state="RUNNING")["pid"]
    os.kill(pid, signal.SIGKILL)
    pid = info_when(rpc, "web-node1", state="RUNNING", restarts=1)["pid"]

    assert rpc.meshx.restart("web-node1") is True
    info = info_when(rpc, "web-node1", state="RUNNING")
    assert info["restarts"] == 0
    assert info["pid"] != pid


def test_operator_starts_are_not_counted(supervisord):
    rpc = supervisord.rpc
    rpc.meshx.startProxy("web-node1", SLEEP)
    info_when(rpc, "web-node1", state="RUNNING")
    assert supervisord.ctl("restart", "meshx-web-node1").returncode == 0
    assert supervisord.ctl("stop", "meshx-web-node1").returncode == 0
    assert supervisord.ctl("start", "meshx-web-node1").returncode == 0
    assert info_when(rpc, "web-node1", state="RUNNING")["restarts"] == 0


def test_stop_proxy_removes_the_group(supervisord):
    rpc = supervisord.rpc
    rpc.meshx.startProxy("web-node1", SLEEP)
    pid = info_when(rpc, "web-node1", state="RUNNING")["pid"]

    assert rpc.meshx.stopProxy("web-node1") is True
    assert "meshx-web-node1" not in supervisord.ctl("status").stdout
    assert all(p["group"] != "meshx-web-node1" for p in rpc.supervisor.getAllProcessInfo())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert fault_of(rpc.meshx.info, "web-node1").faultString == "BAD_NAME: no proxy for web-node1"
    # the id is free again
    assert rpc.meshx.startProxy("web-node1", SLEEP) is True


def test_stop_proxy_kills_a_proxy_that_ignores_the_stop_signal(make_supervisord, tmp_path):
    server = make_supervisord(meshx_options={"proxy_stopwaitsecs": "1"})
    rpc = server.rpc
    ready = tmp_path / "ready"
    rpc.meshx.startProxy("stubborn", ["sh", "-c", "trap '' TERM; touch %s; while true; do sleep 0.1; done" % ready])
    wait_for(ready.exists, message="the proxy to ignore SIGTERM")
    started = time.monotonic()
    assert rpc.meshx.stopProxy("stubborn") is True
    assert time.monotonic() - started < 5
    assert "with SIGKILL" in server.log()


PROBE = r"""
import json, os, stat, time
umask = os.umask(0)
print(json.dumps({
    "fds": sorted(os.listdir("/proc/self/fd")), "own_group": os.getpgid(0) == os.getpid(), "session": os.getsid(0),
    "pipes": [stat.S_ISFIFO(os.fstat(fd).st_mode) for fd in (0, 1, 2)], "stderr_apart": os.fstat(1) != os.fstat(2),
    "signals": os.environ["PROBE_SIGNALS"], "umask": umask, "cwd": os.getcwd(),
    "env": {key: value for key, value in os.environ.items() if key.startswith("SUPERVISOR_")},
}), flush=True)
time.sleep(1000)
"""


def test_a_proxy_is_set_up_as_supervisord_sets_up_its_own_programs(make_supervisord, tmp_path):
    """Process group, pipes, descriptors, signals, umask, directory and SUPERVISOR_* variables:
    the same for a proxy (started without a fork of supervisord) as for a [program:x]."""
    (tmp_path / "probe.py").write_text(PROBE)
    probe = tmp_path / "probe.sh"  # the signals a program starts with: Python changes its own
    probe.write_text("export PROBE_SIGNALS=\"$(grep -E '^Sig(Blk|Ign)' /proc/$$/status | tr '\\n' ' ')\"\n"
                     "exec %s %s\n" % (sys.executable, tmp_path / "probe.py"))
    server = make_supervisord(extra_config="[program:plain]\ncommand = sh %s\nstartsecs = 0\n" % probe)
    server.rpc.meshx.startProxy("web-node1", ["sh", str(probe)])

    def facts(name):
        def printed():
            out = server.rpc.supervisor.readProcessStdoutLog(name, 0, 100000)
            return json.loads(out) if out.endswith("\n") else None
        return wait_for(printed, message="%s to say how it was set up" % name)
    plain, proxy = facts("plain"), facts("meshx-web-node1:meshx-web-node1")
    assert plain["env"].pop("SUPERVISOR_PROCESS_NAME") == plain["env"].pop("SUPERVISOR_GROUP_NAME") == "plain"
    assert proxy["env"].pop("SUPERVISOR_PROCESS_NAME") == proxy["env"].pop("SUPERVISOR_GROUP_NAME") \
        == "meshx-web-node1"
    assert proxy == plain
    assert plain["own_group"] and all(plain["pipes"]) and plain["stderr_apart"]
    assert plain["env"]["SUPERVISOR_ENABLED"] == "1" and plain["env"]["SUPERVISOR_SERVER_URL"]


def test_faults(supervisord):
    rpc = supervisord.rpc
    rpc.meshx.startProxy("web-node1", SLEEP)

    already = fault_of(rpc.meshx.startProxy, "web-node1", SLEEP)
    assert (already.faultCode, already.faultString) == (60, "ALREADY_STARTED: web-node1")
    for bad_id in ("a b", "x:y", "a/b", "", "-lead", "x;touch${IFS}/tmp/owned"):
        fault = fault_of(rpc.meshx.startProxy, bad_id, SLEEP)
        assert fault.faultCode == 10 and fault.faultString.startswith("BAD_NAME: "), bad_id
    for call in (rpc.meshx.stopProxy, rpc.meshx.restart, rpc.meshx.info):
        assert fault_of(call, "nobody").faultString == "BAD_NAME: no proxy for nobody"
    bad_cmd = fault_of(rpc.meshx.startProxy, "db-node1", "sleep 1000")
    assert bad_cmd.faultString.startswith("BAD_ARGUMENTS: ")

    assert rpc.meshx.startProxy("db-node1", []) is False
    assert fault_of(rpc.meshx.info, "db-node1").faultCode == 10
    assert "meshx-db-node1" not in supervisord.ctl("status").stdout


def test_a_program_outside_proxy_executables_is_refused(supervisord):
    rpc = supervisord.rpc
    for cmd in (["touch", "/tmp/meshx-owned"], ["/usr/bin/touch", "/tmp/meshx-owned"], ["./sleep", "1"]):
        fault = fault_of(rpc.meshx.startProxy, "evil", cmd)
        assert fault.faultCode == 1001
        assert fault.faultString.startswith("COMMAND_NOT_ALLOWED: ")
    assert not os.path.exists("/tmp/meshx-owned")
    assert fault_of(rpc.meshx.info, "evil").faultCode == 10
    assert "meshx-evil" not in supervisord.ctl("status").stdout


def test_max_proxy_restarts_leaves_a_crashing_proxy_down_with_growing_delays(make_supervisord, tmp_path):
    server = make_supervisord(meshx_options={
        "max_proxy_restarts": "3", "proxy_backoff_seconds": "0.3", "proxy_backoff_max_seconds": "5"})
    rpc = server.rpc
    starts = tmp_path / "starts"
    crash = ["sh", "-c", "date +%%s.%%N >> %s; sleep 0.1; exit 3" % starts]
    rpc.meshx.startProxy("crashy", crash)

    info = info_when(rpc, "crashy", restarts=3, state="EXITED")
    times = [float(line) for line in starts.read_text().split()]
    assert len(times) == 4  # the start and 3 restarts
    gaps = [b - a for a, b in zip(times, times[1:])]
    # each run lasts 0.1 s; then no delay, 0.3 s, 0.6 s
    assert gaps[0] < 0.1 + 0.3
    assert gaps[1] >= 0.1 + 0.3 * 0.9
    assert gaps[2] >= 0.1 + 0.6 * 0.9
    assert info["pid"] == 0
    assert "meshx-crashy stays down after 3 restarts (max_proxy_restarts)" in server.log()

    assert rpc.meshx.restart("crashy") is True
    assert rpc.meshx.info("crashy")["restarts"] == 0
    wait_for(lambda: len(starts.read_text().split()) >= 5, message="a fresh start after meshx.restart")


def test_a_proxy_that_fails_to_start_ends_fatal_at_the_limit(make_supervisord):
    server = make_supervisord(meshx_options={
        "max_proxy_restarts": "2", "proxy_startsecs": "1", "proxy_backoff_seconds": "0.1"})
    rpc = server.rpc
    rpc.meshx.startProxy("nostart", ["sh", "-c", "exit 1"])
    info = info_when(rpc, "nostart", state="FATAL")
    assert info["restarts"] == 2


def test_unlimited_restarts(make_supervisord):
    server = make_supervisord(meshx_options={"max_proxy_restarts": "unlimited", "proxy_backoff_seconds": "0.05",
                                             "proxy_backoff_max_seconds": "0.1"})
    rpc = server.rpc
    rpc.meshx.startProxy("crashy", ["sh", "-c", "exit 1"])
    info = info_when(rpc, "crashy", restarts=8)
    assert info["max_restarts"] == -1


def test_update_reread_and_avail_leave_proxy_groups_alone(supervisord):
    rpc = supervisord.rpc
    rpc.meshx.startProxy("web-node1", SLEEP)
    pid = info_when(rpc, "web-node1", state="RUNNING")["pid"]

    assert "No config updates" in supervisord.ctl("reread").stdout
    update = supervisord.ctl("update")
    assert update.returncode == 0 and "meshx-web-node1" not in update.stdout
    assert "meshx-web-node1" in supervisord.ctl("avail").stdout
    info = rpc.meshx.info("web-node1")
    assert (info["state"], info["pid"]) == ("RUNNING", pid)


def test_environment_reaches_the_proxy_and_its_values_stay_secret(make_supervisord, tmp_path):
    secret = "s3cr3t-token-value"
    server = make_supervisord(
        meshx_options={"proxy_environment": 'CONSUL_HTTP_TOKEN="%s",MESHX_LEVEL="debug"' % secret},
        supervisord_options='environment = FROM_SUPERVISORD="yes"')
    rpc = server.rpc
    envfile = tmp_path / "env"
    rpc.meshx.startProxy("web-node1", ["sh", "-c", "env > %s.tmp && mv %s.tmp %s; exec sleep 1000"
                                       % (envfile, envfile, envfile)])
    wait_for(envfile.exists, message="the proxy to write its environment")
    env = dict(line.split("=", 1) for line in envfile.read_text().splitlines() if "=" in line)
    assert env["CONSUL_HTTP_TOKEN"] == secret
    assert env["MESHX_LEVEL"] == "debug"
    assert env["FROM_SUPERVISORD"] == "yes"

    assert secret not in repr(rpc.meshx.info("web-node1"))
    assert secret not in fault_of(rpc.meshx.startProxy, "web-node1", SLEEP).faultString
    assert secret not in server.log()


def test_both_http_servers_share_one_plugin(make_supervisord):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_supervisord(inet_port=port)
    unix, inet = server.rpc, xmlrpc.client.ServerProxy("http://127.0.0.1:%d/RPC2" % port)
    unix.meshx.startProxy("web-node1", SLEEP)
    pid = info_when(inet, "web-node1", state="RUNNING")["pid"]
    os.kill(pid, signal.SIGKILL)
    info = wait_for(lambda: (lambda i: i if i["pid"] not in (0, pid) else None)(inet.meshx.info("web-node1")))
    assert info["restarts"] == 1
    assert unix.meshx.info("web-node1")["restarts"] == 1


def test_methods_are_documented(supervisord):
    rpc = supervisord.rpc
    methods = [m for m in rpc.system.listMethods() if m.startswith("meshx.")]
    assert set(methods) >= {"meshx.getAPIVersion", "meshx.startProxy", "meshx.stopProxy",
                            "meshx.restart", "meshx.info"}
    for method in methods:
        assert "@return" in rpc.system.methodHelp(method), method
    assert rpc.system.methodSignature("meshx.startProxy") == ["boolean", "string", "array"]
    assert isinstance(rpc.meshx.getAPIVersion(), str)


def test_an_unknown_config_key_stops_supervisord_with_a_clear_message(tmp_path):
    from supervisord_harness import Supervisord
    server = Supervisord(meshx_options={"max_proxy_restart": "3"})
    try:
        with pytest.raises(AssertionError) as caught:
            server.start()
        assert "Error: meshx: unknown key(s) in [rpcinterface:meshx]: max_proxy_restart" in str(caught.value)
        assert "Traceback" not in server.log()
        assert "unknown key(s) in [rpcinterface:meshx]: max_proxy_restart" in server.log()
    finally:
        server.stop()
