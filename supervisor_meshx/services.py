"""Mesh services: MeshxConsul's start/stop, as desired state.

Each call validates its input, records the desired state of the service
(written to the state file before anything changes), asks the reconciler to
converge and waits for it, then answers.  ``start`` registers a service and
its Connect sidecar in the local Consul agent, hands the caller a loopback
endpoint, keeps its TTL check alive and runs its proxy; a start that fails
is turned into a stop, so nothing is left behind.  Operations are generators
run by ``tasks.run`` on supervisord's main loop; Consul calls go to worker
threads.  Every operation on one id holds that id's lock.
"""
import copy
import inspect
import operator
import time

from supervisor.xmlrpc import RPCError

from supervisor_meshx import limits, registration, templates
from supervisor_meshx.consul_connection import read_token_file
from supervisor_meshx.desired_state import CASE, OWNER, ServiceRecord, is_token_path
from supervisor_meshx.faults import MeshxFault
from supervisor_meshx.health import KINDS as HEALTH_KINDS
from supervisor_meshx.names import checked_service_id
from supervisor_meshx.ports import PortsExhausted
from supervisor_meshx.reconciler import case_clash
from supervisor_meshx.state_file import Section
from supervisor_meshx.tasks import Task, Wait
from supervisor_meshx.ttl import STATUSES
from supervisor_meshx.wire import NOT_XML

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
NOT_READY_WAIT_MS = 5000
MAX_DRAIN_SECONDS = 3600
MAX_REASON = 256  # how long a start with timeout 0 waits for an agent that is not ready yet
MAX_BATCH = 1000  # services in one startMany call


class MeshServices:
    def __init__(self, loop, reconciler, proxies, ttl, ports, settings, ready, save, log):
        """``ports``: the plugin's ``Ports``; ``ready()``: steps that
        wait until the state of an earlier run is restored; ``save()``: a future of the
        state on disk."""
        self._loop = loop
        self._reconciler = reconciler
        self.records = reconciler.records
        self.locks = reconciler.locks
        self.agent = reconciler.agent
        self.consul = reconciler.consul
        self.proxies = proxies
        self._ttl = ttl
        self._ports = ports
        self._ready = ready
        self.save = save
        self._log = log
        self._node_name = settings.node_name
        self._drain_seconds = settings.stop_drain_seconds
        self.health_problem = lambda service_id: None  # set by the plugin when probes run
        self._defaults = templates.merge_defaults(settings.service_template, DEFAULT_TEMPLATE)

    def ids(self):
        return sorted(i for i, r in self.records.items() if r.present)

    def owned(self, service_id):
        checked_service_id(service_id)
        record = self.records.get(service_id)
        if record is None or not record.present:
            raise MeshxFault("SERVICE_NOT_OWNED", "%s was not started by this supervisord" % service_id)
        return record

    def locked(self, service_id, steps):
        """Steps: ``steps`` (a generator) with ``service_id``'s lock held, once restored."""
        yield from self._ready()
        yield from self.locks.acquire(service_id)
        try:
            return (yield from steps)
        finally:
            self.locks.release(service_id)

    # -- start -----------------------------------------------------------

    def start(self, service, template, force, timeout):
        """Steps of meshx.start."""
        params = self._params(service)
        template = _checked_template(template)
        if not isinstance(force, bool):
            raise MeshxFault("BAD_ARGUMENTS", "force must be a boolean")
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 <= timeout <= MAX_TIMEOUT_MS:
            raise MeshxFault("BAD_ARGUMENTS", "timeout must be milliseconds from 0 to %d" % MAX_TIMEOUT_MS)
        return (yield from self.locked(params["id"], self.start_locked(params, template, force, timeout)))

    def start_locked(self, params, template, force, timeout, placeholder=False):
        """Steps of a start, the id's lock held; ``placeholder`` listens on the
        endpoint (for a service that exists only to carry upstreams)."""
        service_id = params["id"]
        record = self.records.get(service_id)
        if record is not None and not record.present:
            yield from self._reconciler.converge(record)  # finish the stop first
            record = None
        if record is not None:
            return (yield from self._already_started(record, timeout))

        token_file = self._token_file(params, template)
        variant = self._reconciler.known_variant(service_id)
        if variant:
            raise case_clash(service_id, variant)
        record = self._new_record(params, template, placeholder)
        record.token_file = token_file
        record.pending_checks = (CASE,) if force else (CASE, OWNER)
        self.records[service_id] = record
        saved = self.save()  # written while the agent is looked at: a restored record is checked again
        try:
            observed = yield from self._reconciler.vet(record)
        except Exception:
            self._reconciler.forget(record)
            try:
                yield self.save()
            except MeshxFault:
                pass  # the state file says so, and writes it when it can
            raise
        try:
            # recorded on disk first; the registration follows the write on a worker, no trip between
            yield from self._reconciler.converge(record, time.monotonic() + (timeout or NOT_READY_WAIT_MS) / 1000.0,
                                                 observed=observed, after=saved)
            if timeout:
                yield from self._wait_passing(service_id, timeout)
        except Exception as exc:
            evidence = self.proxies.evidence(service_id) if record.cmd else ""
            if evidence:
                self._log("meshx: start of %s failed: %s" % (service_id, evidence))
            record.present = False
            try:
                yield from self._reconciler.converge(record)
            except MeshxFault as undo_error:
                self._log("meshx: the failed start of %s is not undone yet (%s); retrying"
                          % (service_id, undo_error.text))
            if evidence and isinstance(exc, MeshxFault):
                raise MeshxFault(exc.name, "%s; %s" % (exc.detail, evidence))
            raise
        return record.result()

    def start_many(self, services, template, force, timeout):
        """Steps: start every service concurrently; one result or error per service, in order."""
        if not isinstance(services, list) or len(services) > MAX_BATCH:
            raise MeshxFault("BAD_ARGUMENTS", "services must be a list of at most %d" % MAX_BATCH)
        limits.check_size(services, limits.MAX_BATCH_SIZE, "services")
        _checked_template(template)
        self._reconciler.list_all()  # one listing for all their look-ups
        started = [Task(self._loop, self.start(service, template, force, timeout), self._log)
                   for service in services]
        yield Wait(lambda: all(task.done for task in started), timeout=MAX_TIMEOUT_MS / 1000.0 + 300)
        return [_outcome(task, service) for task, service in zip(started, services)]

    def _already_started(self, record, timeout):
        """A service this supervisord started (perhaps before a crash or a reload):
        finish the job, then wait (within ``timeout``) for it to pass."""
        yield from self._reconciler.converge(record)
        service_id = record.service_id
        if record.ttl and record.ttl["status"] != "passing":
            raise MeshxFault("INVALID_STATE", "%s is started and its TTL status is set to %s "
                             "(meshx ttl %s passing sets it back)" % (service_id, record.ttl["status"], service_id))
        try:
            yield from self._wait_passing(service_id, timeout)
        except MeshxFault as exc:
            if exc.name != "SERVICE_ALIVE_TIMEOUT":
                raise
            raise MeshxFault("INVALID_STATE", "%s is started but %s; `meshx status` shows its proxy, "
                             "`meshx restart %s` restarts it" % (service_id, exc.detail, service_id))
        return record.result(already_started=True)

    def _wait_passing(self, service_id, timeout_ms):
        """Query the agent's health, again after each TTL update (or every HEALTH_POLL s)."""
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            check = self._ttl.get(service_id)
            sent = check.sent_count if check else 0
            record = self.records.get(service_id)
            status = yield self.consul(self.agent.health, service_id,
                                       token_file=record.token_file if record else None)
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
            limits.check_size(service, limits.MAX_SERVICE, "service")
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

    def _new_record(self, params, template, placeholder):
        """The desired state of a new service: ports held, template rendered and checked."""
        held = []
        try:
            address, port, allocated = self._endpoint(params, held)
            params["sidecar_port"] = self._allocate(self._ports.sidecar, held, params["id"])
            params["admin_port"] = self._allocate(self._ports.admin, held, params["id"])
            plan = self._render(template, params)
            if plan.cmd:
                self.proxies.check(params["id"], plan.cmd)
            definition = registration.with_sidecar_port(plan.registration, params["sidecar_port"])
            try:
                definition = registration.owned(definition, self._reconciler.marker)
            except ValueError as exc:
                raise MeshxFault("BAD_TEMPLATE", "registration: %s" % exc)
        except Exception:
            for allocator, held_port in held:
                allocator.give_back(held_port)
            raise
        # a template may set its sidecar's port itself; a service without a sidecar needs neither port
        has_sidecar = registration.sidecar_of(definition) is not None
        sidecar_port = params["sidecar_port"] if registration.sidecar_port(definition) == params["sidecar_port"] else 0
        admin_port = params["admin_port"] if has_sidecar else 0
        for allocator, offered, used in ((self._ports.sidecar, params["sidecar_port"], sidecar_port),
                                         (self._ports.admin, params["admin_port"], admin_port)):
            if not used:
                allocator.give_back(offered)
        return ServiceRecord(params["id"], params["name"], address, port, allocated, definition,
                             sidecar_port=sidecar_port, admin_port=admin_port, ttl=plan.ttl, cmd=plan.cmd,
                             placeholder=placeholder, health=plan.health)

    def _token_file(self, params, template):
        """The service's own token file (``token_file`` of the service or of its template), or None."""
        value = params.get("token_file")
        if value is None:
            value = templates.merge_defaults(template, self._defaults).get("token_file")
            if value is not None:
                try:
                    value = templates.render({"token_file": value}, params)["token_file"]
                except templates.TemplateError as exc:
                    raise MeshxFault("BAD_TEMPLATE", str(exc))
        if value is None or value == "":
            return None
        if not is_token_path(value):
            raise MeshxFault("BAD_ARGUMENTS", "token_file must be an absolute path")
        error = read_token_file(value)[1]
        if error:
            raise MeshxFault("BAD_ARGUMENTS", error)
        return value

    def _endpoint(self, params, held):
        given_address, given_port = params.get("address"), params.get("port")
        if given_address is not None or given_port is not None:
            if not (isinstance(given_address, str) and given_address
                    and isinstance(given_port, int) and not isinstance(given_port, bool)
                    and 0 < given_port < 65536):
                raise MeshxFault("BAD_ARGUMENTS", "address (a string) and port (1-65535) go together")
            return given_address, given_port, False
        endpoints = self._ports.endpoint
        port = self._allocate(endpoints, held, params["id"])
        params["address"], params["port"] = endpoints.address, port
        return endpoints.address, port, True

    @staticmethod
    def _allocate(allocator, held, service_id):
        try:
            port = allocator.allocate_service()
        except PortsExhausted as exc:
            raise MeshxFault("FAILED", "no free port for %s: %s" % (service_id, exc))
        held.append((allocator, port))
        return port

    def _render(self, template, params):
        try:
            rendered = templates.render(templates.merge_defaults(template, self._defaults), params)
        except templates.TemplateError as exc:
            raise MeshxFault("BAD_TEMPLATE", str(exc))
        return _Plan(rendered, params["id"])

    # -- stop ------------------------------------------------------------

    def stop(self, service_id, drain_seconds=None):
        """Steps of meshx.stop: record the stop, drain, then converge to it.
        ``drain_seconds`` None: the configured ``stop_drain_seconds``."""
        checked_service_id(service_id)
        if drain_seconds is None:
            drain_seconds = self._drain_seconds
        if isinstance(drain_seconds, bool) or not isinstance(drain_seconds, (int, float)) \
                or not 0 <= drain_seconds <= MAX_DRAIN_SECONDS:
            raise MeshxFault("BAD_ARGUMENTS", "drain_seconds must be from 0 to %d" % MAX_DRAIN_SECONDS)
        return (yield from self.locked(service_id, self._stop_locked(service_id, drain_seconds)))

    def _stop_locked(self, service_id, drain_seconds):
        record = self.records.get(service_id)
        if record is None:
            return (yield from self._stop_leftover(service_id))
        draining = record.present and record.registered and drain_seconds > 0
        record.present = False
        yield self.save()
        if draining:
            # Consul stops routing new connections to it first; those open may finish
            try:
                yield self.consul(self.agent.maintenance, service_id, True,
                                  "stopping: draining for %g s" % drain_seconds, token_file=record.token_file)
                yield Wait(lambda: False, timeout=drain_seconds)
            except MeshxFault as exc:
                self._log("meshx: %s stops without draining: %s" % (service_id, exc.text))
        yield from self._reconciler.converge(record)
        return True

    def maintenance(self, service_id, enable, reason):
        """Steps of meshx.maintenance: Consul routes no new connections to the service while on."""
        if not isinstance(enable, bool):
            raise MeshxFault("BAD_ARGUMENTS", "enable must be a boolean")
        if not isinstance(reason, str) or len(reason) > MAX_REASON or NOT_XML.search(reason):
            raise MeshxFault("BAD_ARGUMENTS", "reason must be text of at most %d characters" % MAX_REASON)
        checked_service_id(service_id)
        return (yield from self.locked(service_id, self._maintenance_locked(service_id, enable, reason)))

    def _maintenance_locked(self, service_id, enable, reason):
        record = self.owned(service_id)
        before = record.maintenance
        record.maintenance = (reason or "set with meshx maintenance") if enable else None
        try:
            yield self.save()
            yield self.consul(self.agent.maintenance, service_id, enable, record.maintenance or "",
                              token_file=record.token_file)
        except Exception:
            record.maintenance = before
            self.save()
            raise
        return True

    def _stop_leftover(self, service_id):
        """A registration of this instance whose desired state was lost (a start
        cut short before it was recorded, a lost state file): remove it."""
        existing = yield self.consul(self.agent.service, service_id)
        if existing is None or not registration.carries(existing, self._reconciler.marker):
            raise MeshxFault("SERVICE_NOT_OWNED", "%s was not started by this supervisord" % service_id)
        yield self.consul(self.agent.deregister, service_id)
        return True

    def status(self):
        """One row per owned service; local state only, no Consul call."""
        rows = []
        for service_id in self.ids():
            record = self.records[service_id]
            proxy = self.proxies.info(service_id) if record.cmd and self.proxies.has(service_id) else {}
            check = self._ttl.get(service_id)
            rows.append({
                "service_id": service_id, "address": record.address, "port": record.port,
                "sidecar_port": record.sidecar_port or registration.sidecar_port(record.registration),
                "admin_port": record.admin_port,
                "proxy_state": proxy.get("state", "REMOVED" if record.cmd else ""), "pid": proxy.get("pid", 0),
                "restarts": proxy.get("restarts", 0), "restarts_by_cause": proxy.get("restarts_by_cause", {}),
                "last_exit": proxy.get("last_exit", ""), "last_exit_at": proxy.get("last_exit_at", 0),
                "last_running_at": proxy.get("last_running_at", 0), "reregistrations": record.reregistrations,
                "ttl_status": self._ttl.effective(check)[0] if check else "",
                "ttl_set": check.status if check else "", "ttl_sent": (check.sent or "") if check else "",
                "maintenance": record.maintenance is not None, "health": self.health_problem(service_id) or "",
            })
        return rows

    # -- proxies ---------------------------------------------------------

    def start_proxy(self, service_id, cmd):
        """Steps of meshx.startProxy: a proxy of its own, for an id that is no mesh service."""
        checked_service_id(service_id)
        return (yield from self.locked(service_id, self._proxy_only(
            service_id, lambda: self.proxies.start(service_id, cmd))))

    def stop_proxy(self, service_id):
        """Steps of meshx.stopProxy; a mesh service's proxy goes with its service."""
        checked_service_id(service_id)
        return (yield from self.locked(service_id, self._proxy_only(
            service_id, lambda: self.proxies.stop(service_id))))

    def _proxy_only(self, service_id, action):
        if service_id in self.records:
            raise MeshxFault("INVALID_STATE", "%s is a mesh service: `meshx stop %s` stops it with its proxy, "
                             "`supervisorctl stop meshx-%s` stops only the proxy's process"
                             % (service_id, service_id, service_id))
        result = action()
        if inspect.isgenerator(result):
            result = yield from result
        return result

    def restart_proxy(self, service_id):
        """Steps of meshx.restart: a mesh service's proxy is brought back first if it is missing."""
        checked_service_id(service_id)
        return (yield from self.locked(service_id, self._restart_proxy(service_id)))

    def _restart_proxy(self, service_id):
        record = self.records.get(service_id)
        if record is not None and record.present:
            yield from self._reconciler.converge(record)
        return (yield from self.proxies.restart(service_id))

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
        record = self.records[service_id]
        record.ttl = dict(record.ttl, status=status)
        self._ttl.set_status(check.service_id, status)
        self.save()
        return True

    # -- persistence -----------------------------------------------------

    def close_listeners(self):
        """Before a reload closes every descriptor (see ConsulAgent.close)."""
        for record in self.records.values():
            if record.listener is not None:
                record.listener.close()
                record.listener = None

    def snapshot(self):
        return Section(self.records, operator.attrgetter("version"), ServiceRecord.to_json)


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
        self.health = rendered.get("health") or "tcp"
        if self.health not in HEALTH_KINDS:
            raise MeshxFault("BAD_TEMPLATE", "health must be one of %s" % ", ".join(HEALTH_KINDS))
        if self.ttl:
            check_ids = registration.check_ids(self.registration, service_id)
            if self.ttl["id"] not in check_ids:
                raise MeshxFault("BAD_TEMPLATE", "ttl.id %r is not one of the registration's checks (%s)"
                                 % (self.ttl["id"], ", ".join(check_ids) or "it has none"))


def _registration(value, service_id):
    if not isinstance(value, dict):
        raise MeshxFault("BAD_TEMPLATE", "registration must be a struct")
    keys = {k.lower(): k for k in value}
    if not value.get(keys.get("name", "Name")):
        raise MeshxFault("BAD_TEMPLATE", "registration needs a Name")
    definition = dict(value)
    id_key = keys.get("id", "ID")
    if definition.get(id_key, service_id) != service_id:
        raise MeshxFault("BAD_TEMPLATE", "registration ID %r is not the service id %r"
                         % (definition[id_key], service_id))
    definition[id_key] = service_id
    return definition


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
    limits.check_size(template, limits.MAX_TEMPLATE, "template")
    return template
