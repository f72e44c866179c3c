"""Mesh services: MeshxConsul's start/stop on top of proxy groups.

``start`` registers a service and its Connect sidecar in the local Consul
agent, hands the caller a loopback endpoint, keeps its TTL check alive and
runs its proxy; any failure undoes every step taken.  Operations are
generators run by ``tasks.run`` on supervisord's main loop; Consul calls go
to worker threads.
"""
import copy
import socket
import time
from concurrent.futures import Future

from supervisor.xmlrpc import RPCError

from supervisor_meshx import templates
from supervisor_meshx.consul_agent import ConsulError, ConsulUnavailable
from supervisor_meshx.faults import MeshxFault
from supervisor_meshx.names import checked_service_id
from supervisor_meshx.ports import PortsExhausted
from supervisor_meshx.tasks import Task, Wait
from supervisor_meshx.ttl import STATUSES

DEFAULT_TEMPLATE = {
    "registration": {
        "ID": "{{id}}",
        "Name": "{{name}}",
        "Checks": [{"Name": "TTL check", "CheckID": "ttl:{{id}}", "TTL": "10s"}],
        "Connect": {"SidecarService": {"Proxy": {
            "LocalServiceAddress": "{{address}}", "LocalServicePort": "{{$port$}}"}}},
    },
    "ttl": {"id": "ttl:{{id}}", "status": "passing", "ttl": 5000},
    # run directly, not through /bin/sh -c, so that proxy_executables means something
    "proxy": ["consul", "connect", "proxy", "-log-level", "err", "-sidecar-for", "{{id}}"],
}
HEALTH_POLL = 0.25  # seconds between health queries while start waits for passing
MAX_TIMEOUT_MS = 600000
MAX_BATCH = 1000  # services in one startMany call


class OwnedService:
    def __init__(self, service_id, name, address, port, allocated):
        self.service_id = service_id
        self.name = name
        self.address = address
        self.port = port
        self.allocated = allocated  # the port came from this plugin's range
        self.has_proxy = False
        self.registration = None  # as last sent to Consul
        self.upstreams = {}  # name -> {name, address, port}, in the order connected
        self.listener = None  # placeholder socket of a proxy-only service
        self.reregistrations = 0  # times the agent had lost it and it was registered again
        self.reconciling = False

    def result(self, already_started=False):
        return {"service_id": self.service_id, "address": self.address, "port": self.port,
                "already_started": already_started}


class MeshServices:
    def __init__(self, loop, agent, proxies, ttl, ports, settings, log, on_change):
        self._loop = loop
        self._log = log
        self.changed = on_change
        self.agent = agent
        self.proxies = proxies
        self._ttl = ttl
        self._ports = ports
        self._node_name = settings.node_name
        self._defaults = templates.merge_defaults(settings.service_template, DEFAULT_TEMPLATE)
        self._owned = {}
        self._busy = set()  # ids being started or stopped

    def ids(self):
        return sorted(self._owned)

    def owned(self, service_id):
        checked_service_id(service_id)
        service = self._owned.get(service_id)
        if service is None:
            raise MeshxFault("SERVICE_NOT_OWNED", "%s was not started by this supervisord" % service_id)
        return service

    def consul(self, method, *args):
        """A future for an agent call; failures arrive as CONSUL_* faults."""
        def call():
            try:
                return method(*args)
            except ConsulUnavailable as exc:
                raise MeshxFault("CONSUL_UNAVAILABLE", str(exc))
            except ConsulError as exc:
                raise MeshxFault("CONSUL_ERROR", str(exc))
        return self._loop.submit(call)

    # -- start -----------------------------------------------------------

    def start(self, service, template, force, timeout, placeholder=False):
        """Steps of meshx.start; ``placeholder`` listens on the endpoint (for a
        service that exists only to carry upstreams)."""
        params = self._params(service)
        template = _checked_template(template)
        if not isinstance(force, bool):
            raise MeshxFault("BAD_ARGUMENTS", "force must be a boolean")
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 <= timeout <= MAX_TIMEOUT_MS:
            raise MeshxFault("BAD_ARGUMENTS", "timeout must be milliseconds from 0 to %d" % MAX_TIMEOUT_MS)
        service_id = params["id"]
        self._not_busy(service_id)
        if service_id in self._owned:
            return (yield from self._already_started(service_id))

        self._busy.add(service_id)
        undo = []
        try:
            existing = yield self.consul(self.agent.service, service_id)
            if existing is not None and not force:
                raise MeshxFault("SERVICE_NOT_OWNED", "%s is registered in Consul but not by this "
                                 "supervisord (force=true takes it over)" % service_id)
            owned = self._endpoint(params, undo)
            if placeholder:
                owned.listener = self._listen(owned)
                undo.append(owned.listener.close)
            plan = self._render(template, params)
            if plan.cmd:
                self.proxies.check(service_id, plan.cmd)
            yield self.consul(self.agent.register, plan.registration)
            undo.append(lambda: self.consul(self.agent.deregister, service_id))
            if plan.ttl:
                self._ttl.add(service_id, plan.ttl["id"], plan.ttl["status"], plan.ttl["ttl"])
                undo.append(lambda: self._ttl.remove(service_id))
            if plan.cmd:
                self.proxies.start(service_id, plan.cmd)
                undo.append(lambda: self.proxies.stop(service_id))
            if timeout:
                yield from self._wait_passing(service_id, timeout)
        except Exception:
            yield from _undo(undo, self._log)
            raise
        finally:
            self._busy.discard(service_id)
        owned.has_proxy = bool(plan.cmd)
        owned.registration = plan.registration
        self._owned[service_id] = owned
        self.changed()
        return owned.result()

    def start_many(self, services, template, force, timeout):
        """Steps: start every service concurrently; one result or error per service, in order."""
        if not isinstance(services, list) or len(services) > MAX_BATCH:
            raise MeshxFault("BAD_ARGUMENTS", "services must be a list of at most %d" % MAX_BATCH)
        started = [Task(self._loop, self.start(service, template, force, timeout), self._log)
                   for service in services]
        yield Wait(lambda: all(task.done for task in started), timeout=MAX_TIMEOUT_MS / 1000.0 + 60)
        return [_outcome(task, service) for task, service in zip(started, services)]

    def _already_started(self, service_id):
        status = yield self.consul(self.agent.health, service_id)
        if status != "passing":
            raise MeshxFault("INVALID_STATE", "%s is started but %s in Consul" % (service_id, status or "unknown"))
        return self._owned[service_id].result(already_started=True)

    def _wait_passing(self, service_id, timeout_ms):
        """Query the agent's health, again after each TTL update (or every HEALTH_POLL s)."""
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            check = self._ttl.get(service_id)
            sent = check.sent_count if check else 0
            status = yield self.consul(self.agent.health, service_id)
            if status == "passing":
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MeshxFault("SERVICE_ALIVE_TIMEOUT", "%s not passing within %d ms (last: %s)"
                                 % (service_id, timeout_ms, status or "unknown"))
            yield Wait(lambda: check is not None and check.sent_count != sent,
                       timeout=min(HEALTH_POLL, remaining))

    def _params(self, service):
        if isinstance(service, str):
            params = {"name": service}
        elif isinstance(service, dict):
            try:
                templates.check_data(service, "service")
            except templates.TemplateError as exc:
                raise MeshxFault("BAD_ARGUMENTS", str(exc))
            params = copy.deepcopy(service)
        else:
            raise MeshxFault("BAD_ARGUMENTS", "service must be a name or a struct with a name")
        name = checked_service_id(params.get("name"), "service name")
        params.setdefault("id", "%s-%s" % (name, self._node_name))
        checked_service_id(params["id"])
        return params

    def _endpoint(self, params, undo):
        given_address, given_port = params.get("address"), params.get("port")
        if given_address is not None or given_port is not None:
            if not (isinstance(given_address, str) and given_address
                    and isinstance(given_port, int) and not isinstance(given_port, bool)
                    and 0 < given_port < 65536):
                raise MeshxFault("BAD_ARGUMENTS", "address (a string) and port (1-65535) go together")
            return OwnedService(params["id"], params["name"], given_address, given_port, False)
        try:
            port = self._ports.allocate_service()
        except PortsExhausted as exc:
            raise MeshxFault("FAILED", "no free port for %s: %s" % (params["id"], exc))
        undo.append(lambda: self._ports.release(port))
        params["address"], params["port"] = self._ports.address, port
        return OwnedService(params["id"], params["name"], self._ports.address, port, True)

    def _listen(self, owned):
        listener = socket.socket(socket.AF_INET6 if ":" in owned.address else socket.AF_INET)
        try:
            listener.bind((owned.address, owned.port))
            listener.listen(16)
        except OSError as exc:
            listener.close()
            raise MeshxFault("FAILED", "cannot listen on %s:%d: %s" % (owned.address, owned.port, exc))
        return listener

    def _render(self, template, params):
        try:
            rendered = templates.render(templates.merge_defaults(template, self._defaults), params)
        except templates.TemplateError as exc:
            raise MeshxFault("BAD_TEMPLATE", str(exc))
        return _Plan(rendered, params["id"])

    # -- stop ------------------------------------------------------------

    def stop(self, service_id):
        """Deregister first: if the agent can't be reached nothing is changed."""
        owned = self.owned(service_id)
        self._not_busy(service_id)
        self._busy.add(service_id)
        try:
            yield self.consul(self.agent.deregister, service_id)
            self._ttl.remove(service_id)
            if service_id in self.proxies.ids():  # an operator may have used stopProxy
                yield from self.proxies.stop(service_id)
        finally:
            self._busy.discard(service_id)
        del self._owned[service_id]
        if owned.listener:
            owned.listener.close()
        for port in [u["port"] for u in owned.upstreams.values()] + ([owned.port] if owned.allocated else []):
            self._ports.release(port)
        self.changed()
        return True

    def _not_busy(self, service_id):
        if service_id in self._busy:
            raise MeshxFault("INVALID_STATE", "%s is being started or stopped" % service_id)

    def status(self):
        """One row per owned service; local state only, no Consul call."""
        rows = []
        for service_id in self.ids():
            owned = self._owned[service_id]
            proxy = self.proxies.info(service_id) if owned.has_proxy else {}
            check = self._ttl.get(service_id)
            rows.append({
                "service_id": service_id, "address": owned.address, "port": owned.port,
                "proxy_state": proxy.get("state", ""), "pid": proxy.get("pid", 0),
                "restarts": proxy.get("restarts", 0), "reregistrations": owned.reregistrations,
                "ttl_status": self._ttl.effective(check)[0] if check else "",
            })
        return rows

    # -- TTL -------------------------------------------------------------

    def ttl_check(self, service_id):
        self.owned(service_id)
        check = self._ttl.get(service_id)
        if check is None:
            raise MeshxFault("BAD_NAME", "%s has no TTL check" % service_id)
        return check

    def set_ttl_status(self, service_id, status):
        check = self.ttl_check(service_id)
        if status not in STATUSES:
            raise MeshxFault("BAD_ARGUMENTS", "status must be one of %s" % ", ".join(STATUSES))
        self._ttl.set_status(check.service_id, status)
        self.changed()
        return True

    # -- persistence -----------------------------------------------------

    def close_listeners(self):
        """Before a reload closes every descriptor (see ConsulAgent.close)."""
        for owned in self._owned.values():
            if owned.listener is not None:
                owned.listener.close()

    def snapshot(self):
        saved = {}
        for service_id, owned in self._owned.items():
            check = self._ttl.get(service_id)
            saved[service_id] = {
                "name": owned.name, "address": owned.address, "port": owned.port,
                "allocated": owned.allocated, "has_proxy": owned.has_proxy,
                "registration": owned.registration, "upstreams": list(owned.upstreams.values()),
                "placeholder": owned.listener is not None, "reregistrations": owned.reregistrations,
                "ttl": {"id": check.check_id, "status": check.status, "ttl": int(check.interval * 1000)}
                if check else None,
            }
        return saved

    def adopt(self, service_id, saved):
        """Own a service saved by an earlier run again: endpoint and upstreams.

        The proxy is adopted by ProxyGroups; ``reconcile`` then makes sure
        Consul has the registration, and ``resume_ttl`` restarts the updates.
        """
        owned = OwnedService(service_id, saved["name"], saved["address"], saved["port"], saved["allocated"])
        owned.has_proxy = saved["has_proxy"]
        owned.registration = saved["registration"]
        owned.upstreams = {u["name"]: u for u in saved["upstreams"]}
        owned.reregistrations = saved["reregistrations"]
        for port in [u["port"] for u in owned.upstreams.values()] + ([owned.port] if owned.allocated else []):
            self._ports.hold(port)
        if saved["placeholder"]:
            owned.listener = self._listen(owned)
        self._owned[service_id] = owned

    def resume_ttl(self, service_id, saved):
        """After ``reconcile``: an update before it could find the check missing
        and count a re-registration that was only our own shutdown's doing."""
        if saved["ttl"] and service_id in self._owned:
            self._ttl.add(service_id, saved["ttl"]["id"], saved["ttl"]["status"], saved["ttl"]["ttl"])

    def reconcile(self, service_id, count=True):
        """Steps: register an owned service again if the agent has lost it."""
        owned = self._owned.get(service_id)
        if owned is None or owned.reconciling or service_id in self._busy:
            return
        owned.reconciling = True
        try:
            if (yield self.consul(self.agent.service, service_id)) is not None:
                return
            yield self.consul(self.agent.register, owned.registration)
            self._ttl.send_soon(service_id)
            if count:
                owned.reregistrations += 1
                self._log("meshx: the Consul agent had lost %s; registered it again" % service_id)
                self.changed()
        finally:
            owned.reconciling = False


def _outcome(task, service):
    try:
        return task.outcome()
    except RPCError as exc:
        return {"service": _label(service), "error": exc.text}


def _label(service):
    if isinstance(service, dict):
        service = service.get("id") or service.get("name")
    return service if isinstance(service, str) else ""


class _Plan:
    """A rendered template, checked."""

    def __init__(self, rendered, service_id):
        self.registration = _registration(rendered.get("registration"), service_id)
        self.ttl = _ttl(rendered.get("ttl"))
        self.cmd = _proxy_cmd(rendered.get("proxy"))


def _registration(value, service_id):
    if not isinstance(value, dict):
        raise MeshxFault("BAD_TEMPLATE", "registration must be a struct")
    keys = {k.lower(): k for k in value}
    if not value.get(keys.get("name", "Name")):
        raise MeshxFault("BAD_TEMPLATE", "registration needs a Name")
    registration = dict(value)
    id_key = keys.get("id", "ID")
    if registration.get(id_key, service_id) != service_id:
        raise MeshxFault("BAD_TEMPLATE", "registration ID %r is not the service id %r"
                         % (registration[id_key], service_id))
    registration[id_key] = service_id
    return registration


def _ttl(value):
    if not value:
        return None
    if not isinstance(value, dict):
        raise MeshxFault("BAD_TEMPLATE", "ttl must be a struct or empty")
    check_id, status, interval = value.get("id"), value.get("status", "passing"), value.get("ttl")
    if not isinstance(check_id, str) or not check_id or "/" in check_id:
        raise MeshxFault("BAD_TEMPLATE", "ttl.id must be the TTL check's id (no '/')")
    if status not in STATUSES:
        raise MeshxFault("BAD_TEMPLATE", "ttl.status must be one of %s" % ", ".join(STATUSES))
    if isinstance(interval, bool) or not isinstance(interval, int) or not 100 <= interval <= 86400000:
        raise MeshxFault("BAD_TEMPLATE", "ttl.ttl must be milliseconds from 100 to 86400000")
    return {"id": check_id, "status": status, "ttl": interval}


def _proxy_cmd(value):
    if not value:
        return []
    if not isinstance(value, list) or not all(isinstance(arg, str) for arg in value):
        raise MeshxFault("BAD_TEMPLATE", "proxy must be a list of strings or empty")
    return value


def _checked_template(template):
    if template is None or template == "":
        return {}
    if not isinstance(template, dict):
        raise MeshxFault("BAD_ARGUMENTS", "template must be a struct")
    return template


def _undo(steps, log):
    """Undo completed steps, newest first; a failing step doesn't stop the others.

    A step returns None, a Future, or a generator of further steps.
    """
    for step in reversed(steps):
        try:
            result = step()
            if isinstance(result, Future):
                yield result
            elif result is not None:
                yield from result
        except Exception as exc:
            log("meshx: could not undo a step of a failed start: %s" % exc)
