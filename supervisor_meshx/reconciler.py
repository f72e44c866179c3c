"""The one place that decides what must change for a service now.

``converge(record)`` compares a service's desired state with what is (the
agent's service and sidecar, by content; its TTL check; its proxy group; its
placeholder listener) and fixes each difference, or removes everything of a
service that is no longer desired.  It is level-triggered: whatever woke it,
it looks at everything, so it can run after a call, after start-up or a
reload, when a TTL update finds a check missing, periodically, or twice.

Work on one service id never interleaves: ``KeyedLocks`` serialises every
operation on an id (different ids run concurrently).  A failed background
reconcile is retried with a growing delay.  The periodic pass costs one agent
call for all services; it reconciles only the services that differ and
deregisters registrations carrying this instance's marker that nobody wants.
"""
import socket

from supervisor_meshx import registration
from supervisor_meshx.consul_agent import ConsulError, ConsulUnavailable
from supervisor_meshx.faults import MeshxFault
from supervisor_meshx.tasks import Task, Wait

RETRY_MAX = 30.0  # seconds between attempts at a failing background reconcile
LOCK_TIMEOUT = 120.0  # seconds a call waits for earlier work on the same id


class KeyedLocks:
    """At most one holder per key; main thread only."""

    def __init__(self):
        self._held = set()

    def held(self, key):
        return key in self._held

    def acquire(self, key, timeout=LOCK_TIMEOUT):
        """Steps: wait until ``key`` is free and take it."""
        if key in self._held:
            free = yield Wait(lambda: key not in self._held, timeout=timeout)
            if not free:
                raise MeshxFault("INVALID_STATE", "%s is busy with other calls; try again" % key)
        self._held.add(key)

    def release(self, key):
        self._held.discard(key)


class Reconciler:
    def __init__(self, loop, agent, proxies, ttl, ports, marker, save, log):
        """``ports``: (endpoint allocator, sidecar allocator); ``save()``: persist soon."""
        self._loop = loop
        self.agent = agent
        self._proxies = proxies
        self._ttl = ttl
        self._ports, self._sidecar_ports = ports
        self.marker = marker
        self._save = save
        self._log = log
        self.records = {}  # service id -> ServiceRecord
        self.locks = KeyedLocks()
        self.saved_restarts = {}  # service id -> restart count of a proxy not started yet
        self._queued = set()
        self._stale = set()  # ids whose registration must be sent again whatever it looks like
        self._failures = {}
        self._stopped = False

    def stop(self):
        self._stopped = True

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

    # -- converging one service (its lock held) ---------------------------

    def converge(self, record):
        """Steps: make the world match ``record``; a fault if it can't yet
        (a background retry is then scheduled)."""
        try:
            if record.present:
                yield from self._converge_present(record)
            else:
                yield from self._remove(record)
        except MeshxFault:
            self._retry_later(record.service_id)
            raise
        self._failures.pop(record.service_id, None)

    def _converge_present(self, record):
        parent = yield self.consul(self.agent.service, record.service_id)
        sidecar = None
        if registration.sidecar_of(record.registration) is not None:
            sidecar = yield self.consul(self.agent.service, record.sidecar_id)
        stale = record.service_id in self._stale
        if stale or not registration.matches(record.registration, parent, sidecar):
            yield self.consul(self.agent.register, record.registration)
            self._stale.discard(record.service_id)
            if parent is None and record.registered and not record.deregistered:
                record.reregistrations += 1
                self._log("meshx: the Consul agent had lost %s; registered it again" % record.service_id)
            record.registered, record.deregistered = True, False
            self._ttl.send_soon(record.service_id)
            self._save()
        self._run(record)

    def _run(self, record):
        """The local parts: TTL updates, proxy group, placeholder listener."""
        service_id = record.service_id
        if record.ttl and self._ttl.get(service_id) is None:
            self._ttl.add(service_id, record.ttl["id"], record.ttl["status"], record.ttl["ttl"])
        if record.cmd and service_id not in self._proxies.ids():
            self._proxies.start(service_id, record.cmd, self.saved_restarts.pop(service_id, 0))
        if record.placeholder and record.listener is None:
            record.listener = listen(record.address, record.port)

    def _remove(self, record):
        """Deregister first: while the agent can't be reached nothing else changes."""
        service_id = record.service_id
        yield self.consul(self.agent.deregister, service_id)
        if registration.sidecar_of(record.registration) is not None:
            yield self.consul(self.agent.deregister, record.sidecar_id)  # if the parent was gone alone
        self._ttl.remove(service_id)
        if record.cmd and service_id in self._proxies.ids():
            yield from self._proxies.stop(service_id)
        if record.listener is not None:
            record.listener.close()
            record.listener = None
        for port in record.ports():
            self._ports.release(port)
        if record.sidecar_port:
            self._sidecar_ports.release(record.sidecar_port)
        if self.records.get(service_id) is record:
            del self.records[service_id]
        self._save()

    def is_local_ok(self, record):
        """Whether the local parts of a desired service are all there."""
        service_id = record.service_id
        return ((not record.ttl or self._ttl.get(service_id) is not None)
                and (not record.cmd or service_id in self._proxies.ids())
                and (not record.placeholder or record.listener is not None))

    # -- in the background ------------------------------------------------

    def reconcile(self, service_id, register=False):
        """Converge one service soon, after any call working on it; ``register``:
        send its registration again even if it looks right (its TTL check is missing)."""
        if register:
            self._stale.add(service_id)
        if service_id in self._queued or self._stopped:
            return
        self._queued.add(service_id)
        Task(self._loop, self._reconcile(service_id), self._log)

    def _reconcile(self, service_id):
        yield from self.locks.acquire(service_id, timeout=float("inf"))
        self._queued.discard(service_id)
        try:
            record = self.records.get(service_id)
            if record is not None and not self._stopped:
                yield from self.converge(record)
        except MeshxFault as exc:
            if self._failures.get(service_id) == 1:
                self._log("meshx: cannot converge %s yet (%s); retrying" % (service_id, exc.text))
        finally:
            self.locks.release(service_id)

    def _retry_later(self, service_id):
        failures = self._failures[service_id] = self._failures.get(service_id, 0) + 1
        delay = min(RETRY_MAX, 0.5 * 2 ** failures)
        self._loop.call_later(delay, lambda: self.reconcile(service_id))

    def collect(self, service_id):
        """Deregister a registration of this instance that no record wants."""
        if not self._stopped:
            Task(self._loop, self._collect(service_id), self._log)

    def _collect(self, service_id):
        yield from self.locks.acquire(service_id, timeout=float("inf"))
        try:
            if service_id not in self.records:
                yield self.consul(self.agent.deregister, service_id)
                self._log("meshx: deregistered %s: registered by this supervisord, no longer wanted"
                          % service_id)
        except MeshxFault:
            pass  # the next periodic pass tries again
        finally:
            self.locks.release(service_id)

    def periodic_pass(self):
        """Steps: one agent call for all services; reconcile what differs, collect what is ours and unwanted."""
        services = yield self.consul(self.agent.services)
        wanted = set()
        for service_id, record in list(self.records.items()):
            wanted.update((service_id, record.sidecar_id))
            if self.locks.held(service_id):
                continue  # being worked on: it converges anyway
            if not record.present or not self.is_local_ok(record) or not registration.matches(
                    record.registration, services.get(service_id), services.get(record.sidecar_id)):
                self.reconcile(service_id)
        for service_id, view in services.items():
            if service_id not in wanted and registration.carries(view, self.marker):
                if service_id.endswith("-sidecar-proxy") and \
                        service_id[:-len("-sidecar-proxy")] in services:
                    continue  # goes with its service
                self.collect(service_id)


def listen(address, port):
    """The placeholder listener of a proxy-only service."""
    listener = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
    try:
        listener.bind((address, port))
        listener.listen(16)
    except OSError as exc:
        listener.close()
        raise MeshxFault("FAILED", "cannot listen on %s:%d: %s" % (address, port, exc))
    return listener
