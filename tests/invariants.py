"""The invariants every crash-consistency test checks when the dust has settled:
for every service, desired (meshx.list) <=> registered with this instance's
owner marker <=> exactly one live proxy process <=> its ports held; nothing
else registered with the marker, no other proxy process of this instance."""
import os

import requests

from supervisor_meshx import ownership
from supervisord_harness import wait_for

NODE = "node1"


def instance_of(server):
    return ownership.instance_id(NODE, os.path.join(server.dir, "supervisord.meshx.json"))


def proxy_processes(instance):
    """pid -> service id of every live process whose environment names ``instance``."""
    wanted = ("%s=%s" % (ownership.ENV_INSTANCE, instance)).encode()
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if wanted in environ and ownership.start_time(int(name)) is not None:
            service = [e for e in environ if e.startswith(ownership.ENV_SERVICE.encode() + b"=")]
            found[int(name)] = service[0].split(b"=", 1)[1].decode() if service else ""
    return found


def differences(server, agent, expected):
    """What differs from the invariants, or None."""
    rpc = server.rpc
    listed = set(rpc.meshx.list())
    if listed != expected:
        return "meshx.list() %s, expected %s" % (sorted(listed), sorted(expected))
    instance = instance_of(server)
    services = requests.get(agent.url + "/v1/agent/services", timeout=5).json()
    ours = {sid for sid, s in services.items() if (s.get("Meta") or {}).get(ownership.INSTANCE_KEY) == instance}
    wanted = expected | {sid + "-sidecar-proxy" for sid in expected}
    if ours != wanted:
        return "registered with the marker: extra %s, missing %s" % (sorted(ours - wanted), sorted(wanted - ours))
    processes = proxy_processes(instance)
    by_service = {}
    for pid, service_id in processes.items():
        by_service.setdefault(service_id, []).append(pid)
    if set(by_service) != expected or any(len(pids) != 1 for pids in by_service.values()):
        return "proxy processes by service: %s" % by_service
    groups = {p["group"]: p for p in rpc.supervisor.getAllProcessInfo() if p["group"].startswith("meshx-")}
    if set(groups) != {"meshx-" + sid for sid in expected}:
        return "proxy groups %s" % sorted(groups)
    for service_id in expected:
        info = groups["meshx-" + service_id]
        if info["statename"] != "RUNNING" or [info["pid"]] != by_service[service_id]:
            return "proxy of %s: %s pid %s, processes %s" % (service_id, info["statename"], info["pid"],
                                                             by_service[service_id])
    rows = rpc.meshx.status()
    endpoints = [r["port"] for r in rows]
    sidecars = [r["sidecar_port"] for r in rows]
    upstream_ports = [u for sid in expected for u in _upstream_ports(services.get(sid + "-sidecar-proxy"))]
    held = endpoints + sidecars + upstream_ports
    if len(set(held)) != len(held):
        return "a port held twice: %s" % sorted(held)
    for row in rows:
        if services[row["service_id"] + "-sidecar-proxy"]["Port"] != row["sidecar_port"]:
            return "sidecar port of %s differs from the agent's" % row["service_id"]
    return None


def _upstream_ports(sidecar):
    return [u["LocalBindPort"] for u in ((sidecar or {}).get("Proxy") or {}).get("Upstreams") or []]


def assert_converged(server, agent, expected, timeout=30):
    """Wait (bounded) until the invariants hold for exactly the ``expected`` service ids."""
    expected = set(expected)
    last = []

    def holds():
        last[:] = [differences(server, agent, expected)]
        return last[0] is None
    try:
        wait_for(holds, timeout=timeout, interval=0.2, message="the invariants")
    except AssertionError:
        raise AssertionError("invariants do not hold: %s" % last[0])
