"""Every interruption converges: supervisord SIGKILLed or reloaded mid-call, an
agent that answers too late, concurrent clients on the same ids, an agent
wipe.  After each, the invariants of ``invariants.py`` hold."""
import json
import os
import random
import signal
import socket
import threading
import time
import xmlrpc.client

import pytest
import requests

from consul_fixtures import *  # noqa: F401,F403
from invariants import assert_converged, instance_of, proxy_processes
from supervisord_harness import free_port_range, wait_for
from test_services import agent_get, agent_services, fault_of, mesh  # noqa: F401

SOAK_SECONDS = float(os.environ.get("MESHX_SOAK_SECONDS", "8"))
DOCUMENTED = ("BAD_NAME", "INVALID_STATE", "SERVICE_NOT_OWNED", "ALREADY_STARTED", "SERVICE_ALIVE_TIMEOUT",
              "CONSUL_UNAVAILABLE", "SHUTDOWN_STATE")


def wide(size):
    """Options for ranges that hold ``size`` services."""
    endpoints = free_port_range(size)
    return {"port_range": "%d-%d" % endpoints,
            "sidecar_port_range": "%d-%d" % free_port_range(size, avoid=endpoints)}


def registrations(agent):
    return agent.count_requests("PUT", "/v1/agent/service/register")


def call_in_thread(fn, *args):
    """Run a call whose supervisord may die under it; the outcome lands in the returned list."""
    outcome = []

    def run():
        try:
            outcome.append(fn(*args))
        except (OSError, xmlrpc.client.Fault, xmlrpc.client.ProtocolError) as exc:
            outcome.append(exc)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("registered_before_kill", [1, 40, 100])
def test_sigkill_during_start_many_then_the_same_call_again(mesh, consul_double, registered_before_kill):
    server = mesh(consul_double, **wide(120))
    names = ["s%03d" % i for i in range(100)]
    thread, _ = call_in_thread(server.rpc.meshx.startMany, names, {}, False, 20000)
    wait_for(lambda: registrations(consul_double) >= registered_before_kill, timeout=30,
             message="%d registrations" % registered_before_kill)
    server.terminate(signal.SIGKILL)
    thread.join(30)

    server.start()
    results = server.rpc.meshx.startMany(names, {}, False, 20000)
    assert [r.get("error") for r in results if "error" in r] == []
    assert_converged(server, consul_double, {n + "-node1" for n in names})
    assert len(proxy_processes(instance_of(server))) == 100


def test_reload_with_starts_in_flight(mesh, consul_double):
    server = mesh(consul_double, **wide(60))
    names = ["r%02d" % i for i in range(50)]
    answers = {}

    def client(part):
        rpc_deadline = time.monotonic() + 60
        for name in part:
            while time.monotonic() < rpc_deadline:
                try:
                    answers[name] = server.rpc.meshx.start(name)
                    break
                except (OSError, xmlrpc.client.ProtocolError):
                    time.sleep(0.05)  # supervisord is reloading: retry, as a client would
                except xmlrpc.client.Fault as fault:
                    assert fault.faultString.split(":")[0] in ("SHUTDOWN_STATE",), fault.faultString
                    time.sleep(0.05)
    threads = [threading.Thread(target=client, args=(names[i::10],), daemon=True) for i in range(10)]
    for thread in threads:
        thread.start()
    wait_for(lambda: registrations(consul_double) >= 15, message="starts under way")
    assert server.ctl("reload").returncode == 0
    for thread in threads:
        thread.join(90)
    assert sorted(answers) == names
    assert_converged(server, consul_double, {n + "-node1" for n in names})


def test_an_agent_slower_than_the_timeout_during_start_stop_connect_disconnect(mesh, consul_double):
    server = mesh(consul_double, consul_timeout="0.5")
    rpc = server.rpc
    sidecar = "upstream-node1-sidecar-proxy"

    consul_double.reply_latency = 1.0  # every call is applied, every answer comes too late
    assert fault_of(rpc.meshx.start, "web").faultString.startswith("CONSUL_UNAVAILABLE: ")
    consul_double.reply_latency = 0.0
    assert_converged(server, consul_double, set())

    rpc.meshx.start("web")
    [cache] = rpc.meshx.connect(["cache"])
    consul_double.reply_latency = 1.0
    assert fault_of(rpc.meshx.connect, ["db"]).faultString.startswith("CONSUL_UNAVAILABLE: ")
    assert fault_of(rpc.meshx.disconnect, ["cache"]).faultString.startswith("CONSUL_UNAVAILABLE: ")
    assert fault_of(rpc.meshx.stop, "web-node1").faultString.startswith("CONSUL_UNAVAILABLE: ")
    consul_double.reply_latency = 0.0

    assert_converged(server, consul_double, {"upstream-node1"})
    assert rpc.meshx.listUpstreams("") == ["cache"]
    upstreams = agent_services(consul_double)[sidecar]["Proxy"]["Upstreams"]
    assert [(u["DestinationName"], u["LocalBindPort"]) for u in upstreams] == [("cache", cache["port"])]


def test_an_agent_wipe_brings_back_the_same_ports(mesh, consul_double):
    server = mesh(consul_double)
    rpc = server.rpc
    fast_ttl = {"ttl": {"id": "ttl:{{id}}", "status": "passing", "ttl": 200}}
    rpc.meshx.start("web", fast_ttl)
    rpc.meshx.start("api", fast_ttl)
    rpc.meshx.connect(["web"], {}, ["api", "api-node1"])
    before = {sid: s for sid, s in agent_services(consul_double).items()}
    consul_double.wipe()
    wait_for(lambda: set(agent_services(consul_double)) == set(before), message="everything registered again")
    after = agent_services(consul_double)
    for sid in before:
        assert after[sid]["Port"] == before[sid]["Port"]
        assert after[sid].get("Proxy", {}).get("Upstreams") == before[sid].get("Proxy", {}).get("Upstreams")
    assert_converged(server, consul_double, {"web-node1", "api-node1"})


def test_concurrent_clients_on_overlapping_ids(mesh, consul_double):
    server = mesh(consul_double)
    names = ["a", "b", "c", "d"]
    failures = []
    deadline = time.monotonic() + SOAK_SECONDS

    def client(seed):
        rnd = random.Random(seed)
        rpc = server.rpc
        while time.monotonic() < deadline:
            name = rnd.choice(names)
            sid = name + "-node1"
            method, args = rnd.choice([
                ("start", (name, {}, False, 2000)), ("start", (name, {}, False, 0)), ("stop", (sid,)),
                ("restart", (sid,)), ("stopProxy", (sid,)), ("startMany", ([name, rnd.choice(names)], {}, False, 0)),
                ("connect", ([rnd.choice(names)], {}, [name, sid])), ("disconnect", ([rnd.choice(names)], sid)),
            ])
            try:
                answer = getattr(rpc.meshx, method)(*args)
            except xmlrpc.client.Fault as fault:
                answer = {"error": fault.faultString}
            for item in answer if isinstance(answer, list) else [answer]:
                error = item.get("error", "") if isinstance(item, dict) else ""
                if error and error.split(":")[0] not in DOCUMENTED:
                    failures.append("%s%r: %s" % (method, args, error))
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SOAK_SECONDS + 120)
    assert failures == []
    assert "Traceback" not in server.log() and "unexpected error" not in server.log()
    assert_converged(server, consul_double, set(server.rpc.meshx.list()))
    for sid in server.rpc.meshx.list():
        server.rpc.meshx.stop(sid)
    assert_converged(server, consul_double, set())


@pytest.mark.parametrize("meanwhile", ["nothing", "another registers its id", "a stop while the agent is down"])
def test_sigkill_while_a_start_looks_at_the_agent_then_its_record_is_checked_again(mesh, consul_double, meanwhile):
    """A start writes its record while it looks at the agent: one restored before its checks passed
    is checked before it is registered, and never takes or removes what another registered."""
    server = mesh(consul_double)
    state = os.path.join(server.dir, "supervisord.meshx.json")
    consul_double.latency = 2.0  # the look-up is still in flight when supervisord dies
    thread, _ = call_in_thread(server.rpc.meshx.start, "web")
    wait_for(lambda: "web-node1" in _saved_services(state), message="the record written")
    server.terminate(signal.SIGKILL)
    consul_double.latency = 0.0
    thread.join(30)
    assert _saved_services(state)["web-node1"]["pending_checks"] == ["case", "owner"]
    assert "web-node1" not in agent_services(consul_double)
    someone_elses = {"ID": "web-node1", "Name": "web", "Port": 80}
    if meanwhile != "nothing":
        requests.put(consul_double.url + "/v1/agent/service/register", json=someone_elses, timeout=5)
    if meanwhile == "a stop while the agent is down":
        consul_double.stop()

    server.start()
    if meanwhile == "nothing":
        assert_converged(server, consul_double, {"web-node1"})
        wait_for(lambda: _saved_services(state)["web-node1"]["pending_checks"] == [], message="checks saved")
        return
    if meanwhile == "a stop while the agent is down":
        assert fault_of(server.rpc.meshx.stop, "web-node1").faultString.startswith("CONSUL_UNAVAILABLE: ")
        consul_double.start()
    else:
        wait_for(lambda: "web-node1 is not started: web-node1 is registered in Consul but not by this "
                 "supervisord" in server.log(), message="the check failed at restore")
    wait_for(lambda: "web-node1" not in _saved_services(state), message="the record dropped from the file")
    assert_converged(server, consul_double, set())
    assert agent_services(consul_double)["web-node1"]["Port"] == 80  # untouched


def _saved_services(path):
    try:
        with open(path) as f:
            return json.load(f).get("services", {})
    except (OSError, ValueError):
        return {}


def test_a_proxy_that_execs_is_found_after_a_sigkill(mesh, consul_double):
    server = mesh(consul_double)
    template = {"proxy": ["sh", "-c", "exec sleep 1000"]}
    server.rpc.meshx.start("web", template)
    wait_for(lambda: any(_command(pid) == ["sleep", "1000"] for pid in proxy_processes(instance_of(server))),
             message="the proxy to exec")
    server.terminate(signal.SIGKILL)
    [orphan] = proxy_processes(instance_of(server))

    server.start()
    assert_converged(server, consul_double, {"web-node1"})
    assert orphan not in proxy_processes(instance_of(server))


def _command(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [part.decode() for part in f.read().split(b"\0")[:-1]]
    except OSError:
        return None


def test_300_services_with_the_agents_default_sidecar_range(mesh, consul_double):
    server = mesh(consul_double, **wide(320))
    names = ["m%03d" % i for i in range(300)]
    results = server.rpc.meshx.startMany(names, {}, False, 0)
    assert [r.get("error") for r in results if "error" in r] == []
    ports = [s["Port"] for sid, s in agent_services(consul_double).items() if sid.endswith("-sidecar-proxy")]
    assert len(set(ports)) == 300


def test_a_port_held_by_another_process_is_skipped(mesh, consul_double, sidecar_port_range):
    server = mesh(consul_double)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", sidecar_port_range[0]))
        busy.listen()
        server.rpc.meshx.start("web")
    assert agent_services(consul_double)["web-node1-sidecar-proxy"]["Port"] == sidecar_port_range[0] + 1
    assert server.rpc.meshx.status()[0]["sidecar_port"] == sidecar_port_range[0] + 1


def test_registrations_of_a_lost_state_file_are_collected_or_adopted(mesh, consul_double):
    server = mesh(consul_double)
    server.rpc.meshx.start("web")
    server.rpc.meshx.start("api")
    server.terminate(signal.SIGKILL)
    os.remove(os.path.join(server.dir, "supervisord.meshx.json"))
    someone_elses = {"Name": "db", "ID": "db-node1", "Meta": {"meshx-instance": "another"}}
    requests.put(consul_double.url + "/v1/agent/service/register", json=someone_elses, timeout=5)

    server.start()
    assert server.rpc.meshx.start("api")["already_started"] is False  # ours, adopted by a new start
    assert_converged(server, consul_double, {"api-node1"})  # web: ours and unwanted, collected
    assert "db-node1" in agent_services(consul_double)  # never touched
    assert fault_of(server.rpc.meshx.start, "db").faultString.startswith("SERVICE_NOT_OWNED: ")


@pytest.mark.parametrize("change", ["content", "sidecar port", "upstreams"])
def test_the_periodic_pass_puts_back_a_registration_changed_behind_its_back(mesh, consul_double, change):
    server = mesh(consul_double, reconcile_interval="0.5")
    server.rpc.meshx.start("api")
    server.rpc.meshx.start("web")
    server.rpc.meshx.connect(["web"], {}, ["api", "api-node1"])  # api's sidecar gets web as an upstream
    before = agent_services(consul_double)
    parent, sidecar = before["api-node1"], before["api-node1-sidecar-proxy"]
    check_id = next(c["CheckID"] for c in agent_get(consul_double, "/v1/agent/checks").json().values()
                    if c["ServiceID"] == "api-node1")
    meta, port, upstreams = dict(parent["Meta"]), sidecar["Port"], sidecar["Proxy"]["Upstreams"]
    if change == "content":
        meta["meshx-hash"] = "0" * 16
    elif change == "sidecar port":
        port += 1
    else:
        upstreams = []
    # as an operator re-registering it by hand would: same id, owner marker and TTL check
    by_hand = {"ID": "api-node1", "Name": parent["Service"], "Address": parent["Address"], "Port": parent["Port"],
               "Meta": meta, "Checks": [{"CheckID": check_id, "Name": "TTL check", "TTL": "10s"}],
               "Connect": {"SidecarService": {"Port": port, "Meta": sidecar["Meta"],
                                              "Proxy": {"Upstreams": upstreams}}}}
    registered = registrations(consul_double)
    assert requests.put(consul_double.url + "/v1/agent/service/register", json=by_hand, timeout=5).ok

    def put_back():
        now = agent_services(consul_double)
        return now.get("api-node1", {}).get("Meta") == parent["Meta"] and \
            now.get("api-node1-sidecar-proxy", {}).get("Port") == sidecar["Port"] and \
            now["api-node1-sidecar-proxy"]["Proxy"].get("Upstreams") == sidecar["Proxy"]["Upstreams"]
    wait_for(put_back, timeout=10, message="api-node1 registered again as it was")
    assert registrations(consul_double) >= registered + 2  # by hand, then the plugin's: it saw the change
    assert_converged(server, consul_double, {"web-node1", "api-node1"})


def test_state_file_entries_of_the_wrong_shape_are_skipped(make_supervisord, consul_double, tmp_path):
    state = tmp_path / "state.json"
    server = make_supervisord(meshx_options={"consul_http_addr": consul_double.http_addr, "node_name": "node1",
                                             "state_file": str(state), "proxy_executables": "sleep"})
    server.rpc.meshx.startProxy("good", ["sleep", "1000"])
    wait_for(lambda: state.exists() and "good" in json.loads(state.read_text()).get("proxies", {}))
    server.terminate()
    saved = json.loads(state.read_text())
    saved["proxies"]["bad"] = {"cmd": "sleep 1000"}
    saved["proxies"]["worse"] = ["x"]
    saved["services"] = {"broken": {"name": 5}}
    state.write_text(json.dumps(saved))

    server.start()
    wait_for(lambda: server.rpc.meshx.info("good")["state"] == "RUNNING", message="the good proxy")
    log = server.log()
    assert "entry proxies.'bad' skipped" in log and "entry proxies.'worse' skipped" in log
    assert "entry services.'broken' skipped" in log
    wait_for(lambda: set(json.loads(state.read_text())["proxies"]) == {"good"}, message="the file rewritten")
    assert json.loads(state.read_text())["services"] == {}
    assert oct(os.stat(state).st_mode & 0o777) == "0o600"

    server.terminate()
    state.write_text(json.dumps({"version": 1, "services": [], "proxies": "nonsense"}))
    server.start()
    wait_for(lambda: "section proxies is not a struct" in server.log(), message="the bad section reported")
    assert server.rpc.meshx.list() == []


def test_a_state_file_write_that_fails_for_a_while_is_retried(make_supervisord, consul_double, tmp_path):
    state = tmp_path / "state.json"
    server = make_supervisord(meshx_options={"consul_http_addr": consul_double.http_addr, "node_name": "node1",
                                             "state_file": str(state), "proxy_executables": "sleep"})
    wait_for(state.exists, message="the first write (at start-up) done")  # nothing else writes until a call
    blocker = tmp_path / ("state.json.tmp-%d" % server.proc.pid)  # where each write starts
    blocker.mkdir()
    server.rpc.meshx.startProxy("later", ["sleep", "1000"])
    wait_for(lambda: "retrying until it can" in server.log(), message="the failed write logged")
    assert not state.exists() or "later" not in state.read_text()
    blocker.rmdir()
    wait_for(lambda: state.exists() and "later" in json.loads(state.read_text())["proxies"],
             message="the state written after all")
    # logged right after the file is in place: the test may read the file first
    wait_for(lambda: "written again" in server.log(), message="the recovery logged")
    assert server.log().count("retrying until it can") == 1


@pytest.mark.parametrize("kind", ["directory", "missing directory"])
def test_a_state_file_that_cannot_be_one_stops_supervisord(make_supervisord, tmp_path, kind):
    path = tmp_path / "dir" if kind == "directory" else tmp_path / "nowhere" / "state.json"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(AssertionError) as failed:
        make_supervisord(meshx_options={"state_file": str(path)})
    assert "supervisord exited" in str(failed.value)
    assert path.is_dir() if kind == "directory" else not path.parent.exists()
