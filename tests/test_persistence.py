"""Nothing lost: reloads, restarts, crashes and Consul outages (real supervisord, Consul double)."""
import json
import os
import signal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consul_fixtures import *  # noqa: F401,F403
from supervisor_meshx.desired_state import ServiceRecord
from supervisor_meshx.restart_policy import RestartRecord
from supervisor_meshx.state_file import Section, SnapshotEncoder
from supervisord_harness import wait_for
from test_services import agent_checks, agent_services, mesh  # noqa: F401


def running(rpc, service_id):
    info = rpc.meshx.info(service_id)
    return info if info["state"] == "RUNNING" else None


def ttl_passing(agent, check_id):
    return agent_checks(agent).get(check_id, {}).get("Status") == "passing"


def landscape(rpc):
    """What must survive: ids, endpoints, upstreams, restart counts."""
    return {row["service_id"]: (row["address"], row["port"], row["restarts"],
                                tuple(rpc.meshx.listUpstreams(row["service_id"])))
            for row in rpc.meshx.status()}


def populate(rpc):
    rpc.meshx.start("web")
    rpc.meshx.start({"name": "api", "id": "api-blue"})
    rpc.meshx.connect(["db", "cache"])
    rpc.meshx.setTtlStatus("api-blue", "warning")
    pid = rpc.meshx.info("web-node1")["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: (lambda i: i["restarts"] == 1 and i["state"] == "RUNNING")(rpc.meshx.info("web-node1")))


def wait_saved(server, service_ids):
    """The state file holds these services (it is written just after a change)."""
    path = os.path.join(server.dir, "supervisord.meshx.json")

    def saved():
        try:
            with open(path) as f:
                return set(json.load(f)["services"]) == set(service_ids)
        except (OSError, ValueError):
            return False
    wait_for(saved, message="the state file")
    return path


@pytest.mark.parametrize("how", ["supervisorctl reload", "SIGHUP"])
def test_reload_keeps_everything(mesh, consul_double, how):
    server = mesh(consul_double)
    rpc = server.rpc
    populate(rpc)
    before = landscape(rpc)
    old_pids = {sid: rpc.meshx.info(sid)["pid"] for sid in before}
    registrations = consul_double.count_requests("PUT", "/v1/agent/service/register")
    wait_saved(server, before)

    if how == "SIGHUP":
        server.proc.send_signal(signal.SIGHUP)
    else:
        assert server.ctl("reload").returncode == 0
    wait_for(lambda: all(running_or_none(server, sid) for sid in before), message="proxies running again")

    assert landscape(server.rpc) == before
    new_pids = {sid: server.rpc.meshx.info(sid)["pid"] for sid in before}
    assert all(new_pids[sid] != old_pids[sid] for sid in before)
    assert server.rpc.meshx.getTtlStatus("api-blue") == "warning"
    wait_for(lambda: ttl_passing(consul_double, "ttl:web-node1"), message="TTL passing after the reload")
    # the agent still had every registration: nothing registered twice
    assert consul_double.count_requests("PUT", "/v1/agent/service/register") == registrations
    assert sorted(s for s in agent_services(consul_double) if not s.endswith("-sidecar-proxy")) == sorted(before)
    assert sum(1 for line in server.ctl("status").stdout.splitlines() if line.startswith("meshx-")) == 3


def running_or_none(server, service_id):
    try:
        return running(server.rpc, service_id)
    except OSError:
        return None
    except Exception:
        return None


def test_sigterm_deregisters_and_a_restart_brings_everything_back(mesh, consul_double):
    server = mesh(consul_double)
    populate(server.rpc)
    before = landscape(server.rpc)
    wait_saved(server, before)

    server.terminate(signal.SIGTERM)
    assert not [s for s in agent_services(consul_double) if s in before]  # clean shutdown deregistered

    server.start()
    wait_for(lambda: all(running_or_none(server, sid) for sid in before), message="proxies running again")
    assert landscape(server.rpc) == before
    wait_for(lambda: set(before) <= set(agent_services(consul_double)), message="registered again")
    wait_for(lambda: ttl_passing(consul_double, "ttl:web-node1"))
    assert server.rpc.meshx.info("web-node1")["reregistrations"] == 0  # our own deregistration


def test_deregister_on_shutdown_false_keeps_registrations(mesh, consul_double):
    server = mesh(consul_double, deregister_on_shutdown="false")
    server.rpc.meshx.start("web")
    wait_saved(server, ["web-node1"])
    server.terminate(signal.SIGTERM)
    assert "web-node1" in agent_services(consul_double)
    assert "web-node1-sidecar-proxy" in agent_services(consul_double)


def test_sigkill_then_restart_stops_the_orphans_and_starts_once(mesh, consul_double):
    server = mesh(consul_double)
    rpc = server.rpc
    rpc.meshx.start("web")
    orphan = rpc.meshx.info("web-node1")["pid"]
    wait_saved(server, ["web-node1"])
    wait_for(lambda: _saved_pid(server) == orphan, message="the pid in the state file")

    server.terminate(signal.SIGKILL)
    os.kill(orphan, 0)  # the proxy outlived supervisord

    server.start()
    info = wait_for(lambda: running_or_none(server, "web-node1"), message="the proxy again")
    wait_for(lambda: not _alive(orphan), message="the orphan to be stopped")
    assert info["pid"] != orphan
    assert "left running by an earlier supervisord" in server.log()
    assert list(agent_services(consul_double)).count("web-node1") == 1


def _saved_pid(server):
    """The proxy's pid in the state file; None before the proxy is saved (its service is saved
    first, before it is registered, the proxy at the next save after it started)."""
    with open(os.path.join(server.dir, "supervisord.meshx.json")) as f:
        return json.load(f).get("proxies", {}).get("web-node1", {}).get("pid")


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_an_agent_outage_is_survived_and_lost_registrations_come_back(mesh, consul_double):
    server = mesh(consul_double)
    rpc = server.rpc
    rpc.meshx.start("web", {"ttl": {"id": "ttl:{{id}}", "status": "passing", "ttl": 200}})
    consul_double.stop()
    wait_for(lambda: "Consul agent unreachable" in server.log(), message="the outage logged")
    fault = pytest.raises(Exception, rpc.meshx.start, "other").value
    assert "CONSUL_UNAVAILABLE" in str(fault)
    assert rpc.supervisor.getState()["statename"] == "RUNNING"

    consul_double.wipe()  # it comes back without its data
    consul_double.start()
    wait_for(lambda: "web-node1" in agent_services(consul_double), message="registered again")
    wait_for(lambda: ttl_passing(consul_double, "ttl:web-node1"), message="TTL passing again")
    assert rpc.meshx.info("web-node1")["reregistrations"] == 1
    # logged once the update that made it passing has been answered: the test may see it passing first
    wait_for(lambda: "Consul agent reachable again" in server.log(), message="the end of the outage logged")
    assert server.log().count("Consul agent unreachable") == 1


def test_an_agent_wiped_while_up(mesh, consul_double):
    server = mesh(consul_double)
    rpc = server.rpc
    rpc.meshx.start("web", {"ttl": {"id": "ttl:{{id}}", "status": "passing", "ttl": 200}})
    consul_double.wipe()
    wait_for(lambda: "web-node1-sidecar-proxy" in agent_services(consul_double), message="registered again")
    wait_for(lambda: rpc.meshx.info("web-node1")["reregistrations"] == 1)
    assert rpc.meshx.status()[0]["reregistrations"] == 1


def test_a_corrupt_state_file_is_set_aside(make_supervisord, consul_double, tmp_path):
    state = tmp_path / "state.json"
    state.write_text("{not json")
    server = make_supervisord(meshx_options={"consul_http_addr": consul_double.http_addr,
                                             "state_file": str(state)})
    wait_for(lambda: "unreadable" in server.log(), message="the corrupt file reported")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("state.json.corrupt-")]
    assert server.rpc.meshx.list() == []
    server.rpc.meshx.startProxy("x", ["sleep", "1000"])
    wait_for(lambda: state.exists() and "x" in json.loads(state.read_text())["proxies"])


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=10)
sections = st.dictionaries(st.text(max_size=6), json_values, max_size=5)


@given(st.lists(st.tuples(st.fixed_dictionaries({"version": st.integers(), "services": sections, "proxies": sections}),
                          st.booleans()), min_size=1, max_size=5))
@settings(max_examples=200, deadline=None)
def test_the_state_file_encoder_writes_what_json_would_making_only_the_entries_that_changed(states):
    """Each step's snapshot is taken, and encoded (in the order taken) or, like a snapshot still
    pending when the next is taken, carried into the next one."""
    encoder, carried, made = SnapshotEncoder(), None, []

    def entries(section):
        def make(item):
            made.append(item[0])
            return item[1]
        return Section({key: (key, value) for key, value in section.items()},
                       lambda item: json.dumps(item[1], sort_keys=True), make)

    previous = {}
    for step, (state, encoded_now) in enumerate(states):
        made.clear()
        snapshot = encoder.take(dict(state, services=entries(state["services"]),
                                     proxies=entries(state["proxies"])))
        assert sorted(made) == sorted(key for name in ("services", "proxies") for key, value in state[name].items()
                                      if previous.get((name, key), ()) != (json.dumps(value, sort_keys=True),))
        previous = {(name, key): (json.dumps(value, sort_keys=True),)
                    for name in ("services", "proxies") for key, value in state[name].items()}
        snapshot = snapshot.after(carried) if carried else snapshot
        carried = None
        if encoded_now or step == len(states) - 1:
            assert encoder.encode(snapshot) == json.dumps(state, sort_keys=True).encode()
        else:
            carried = snapshot


def test_a_versioned_object_moves_its_version_at_every_assignment_never_to_one_used_before():
    first, second = ServiceRecord("a", "a", "127.0.0.1", 1, True, {}), ServiceRecord("a", "a", "127.0.0.1", 1, True, {})
    assert first.version != second.version
    before = second.version
    second.present = False
    assert second.version > before
    record = RestartRecord()
    before = record.version
    record.restarted("crash")
    assert record.version > before and record.history()["restarts_by_cause"]["crash"] == 1
