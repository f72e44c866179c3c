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
import time

from supervisor_meshx import registration
from supervisor_meshx.consul_agent import ConsulError, ConsulUnavailable
from supervisor_meshx.desired_state import CASE, OWNER
from supervisor_meshx.faults import MeshxFault
from supervisor_meshx.names import SIDECAR_SUFFIX
from supervisor_meshx.tasks import Task, Wait

RETRY_MAX = 30.0  # seconds between attempts at a failing background reconcile
# An agent whose cluster has no leader yet refuses registrations with a 500 saying so.
NOT_READY = "could not retrieve initial service_defaults config"
LOCK_TIMEOUT = 120.0  # seconds a call waits for earlier work on the same id
VETOES = ("BAD_NAME", "SERVICE_NOT_OWNED")  # a failed check of a new service: it is not to be started


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
    def __init__(self, loop, agent, proxies, ttl, ports, marker, save, changed, log, count_repair=lambda: None):
        """``ports``: the plugin's ``Ports``; ``save()``: persist soon; ``changed()``: persist
        within a moment (for what only counts); ``count_repair()``: a difference in the agent
        was fixed (for the metrics)."""
        self._count_repair = count_repair
        self._loop = loop
        self.agent = agent
        self._proxies = proxies
        self._ttl = ttl
        self._ports = ports
        self.marker = marker
        self._save = save
        self._changed = changed
        self._log = log
        self.records = {}  # service id -> ServiceRecord
        self.locks = KeyedLocks()
        self.saved_history = {}  # service id -> restart history of a proxy not started yet
        self._queued = set()
        self._stale = set()  # ids whose registration must be sent again whatever it looks like
        self._failures = {}
        self._stopped = False
        self._listing = None  # a future of the agent's services, shared by the starts waiting for it

    def stop(self):
        self._stopped = True

    def consul(self, method, *args, after=None, **kwargs):
        """A future for an agent call; failures arrive as CONSUL_* faults.  ``after``: a
        future that must succeed first (the call is made on a worker as soon as it has)."""
        def call():
            try:
                return method(*args, **kwargs)
            except ConsulUnavailable as exc:
                raise MeshxFault("CONSUL_UNAVAILABLE", str(exc))
            except ConsulError as exc:
                if exc.status == 400:  # only a registration can be refused so
                    raise MeshxFault("BAD_TEMPLATE", "the Consul agent refused the registration: %s" % exc)
                raise MeshxFault("CONSUL_ERROR", str(exc))
        return self._loop.submit(call) if after is None else self._loop.submit_after(after, call)

    # -- converging one service (its lock held) ---------------------------

    def converge(self, record, deadline=0.0, repair=False, observed=None, after=None):
        """Steps: make the world match ``record``; a fault if it can't yet
        (a background retry is then scheduled).  An agent that is not ready
        yet is asked again until ``deadline`` (time.monotonic()).  ``repair``:
        not after a change of the desired state (counted in the metrics).
        ``observed``: the agent's (service, sidecar) as ``observe`` read them
        during this call, else they are read now.  ``after``: a future (the save
        of ``record``) that must succeed before anything changes."""
        try:
            if record.present:
                yield from self._converge_present(record, deadline, repair, observed, after)
            else:
                yield from self._remove(record)
        except MeshxFault:
            if self.records.get(record.service_id) is record:
                self._retry_later(record.service_id)
            raise
        self._failures.pop(record.service_id, None)

    def observe(self, service_id, token_file=None):
        """A future of the agent's (service, sidecar) definitions (None for one it lacks), read
        together on one worker: one trip off the main loop instead of two."""
        def read():
            return (self.agent.service(service_id, token_file=token_file),
                    self.agent.service(service_id + SIDECAR_SUFFIX, token_file=token_file))
        return self.consul(read)

    def _converge_present(self, record, deadline, repair, observed, after):
        if record.pending_checks:  # a start cut short before its checks were done
            try:
                observed = yield from self.vet(record)
            except MeshxFault as exc:
                if exc.name in VETOES:
                    self._log("meshx: %s is not started: %s (its start was cut short before this check)"
                              % (record.service_id, exc.detail))
                    self.forget(record)
                raise
            self._changed()
        parent, sidecar = observed or (yield self.observe(record.service_id, record.token_file))
        stale = record.service_id in self._stale
        if stale or not registration.matches(record.expected(), parent, sidecar):
            yield from self._register(record, deadline, after)
            self._stale.discard(record.service_id)
            if parent is None and record.registered and not record.deregistered:
                record.reregistrations += 1
                self._log("meshx: the Consul agent had lost %s; registered it again" % record.service_id)
            if repair:
                self._count_repair()
            record.registered, record.deregistered = True, False
            if record.maintenance is not None:  # a registration comes without it
                yield self.consul(self.agent.maintenance, record.service_id, True, record.maintenance,
                                  token_file=record.token_file)
            self._ttl.send_soon(record.service_id)
            self._changed()  # registered, reregistrations: counts, nothing a crash must not lose
        elif after is not None:
            yield after
        self._run(record)

    def _register(self, record, deadline, after=None):
        pause = 0.1
        while True:
            try:
                yield self.consul(self.agent.register, record.registration, token_file=record.token_file,
                                  after=after)
                return
            except MeshxFault as exc:
                if NOT_READY not in exc.detail or time.monotonic() + pause > deadline:
                    raise
            yield Wait(lambda: False, timeout=pause)
            pause = min(2 * pause, 1.0)

    def _run(self, record):
        """The local parts: TTL updates, proxy group, placeholder listener."""
        service_id = record.service_id
        if record.ttl and self._ttl.get(service_id) is None:
            self._ttl.add(service_id, record.ttl["id"], record.ttl["status"], record.ttl["ttl"], record.token_file)
        if record.cmd and not self._proxies.has(service_id):
            self._proxies.start(service_id, record.cmd, self.saved_history.pop(service_id, None),
                                {"CONSUL_HTTP_TOKEN_FILE": record.token_file} if record.token_file else None)
        if record.placeholder and record.listener is None:
            record.listener = listen(record.address, record.port)

    def _remove(self, record):
        """Ordered teardown: TTL updates and the proxy stop, then the registrations go (those of
        a service not checked yet only if they are this instance's)."""
        service_id = record.service_id
        self._ttl.remove(service_id)
        if record.cmd and self._proxies.has(service_id):
            yield from self._proxies.stop(service_id)
        ours = True
        if record.pending_checks:
            views = yield self.observe(service_id, record.token_file)
            ours = any(view is not None and registration.carries(view, self.marker) for view in views)
        if ours:
            yield self.consul(self.agent.deregister, service_id, token_file=record.token_file)
            if registration.sidecar_of(record.registration) is not None:  # if the parent was gone alone
                yield self.consul(self.agent.deregister, record.sidecar_id, token_file=record.token_file)
        if record.listener is not None:
            record.listener.close()
            record.listener = None
        for allocator, port in self._ports.held_by(record):
            allocator.release(port)
        self._drop(record)

    def forget(self, record):
        """Drop a service the agent was never asked to register: its ports may be the next ones."""
        for allocator, port in self._ports.held_by(record):
            allocator.give_back(port)
        self._drop(record)

    def _drop(self, record):
        if self.records.get(record.service_id) is record:
            del self.records[record.service_id]
        self._save()

    def is_local_ok(self, record):
        """Whether the local parts of a desired service are all there."""
        service_id = record.service_id
        return ((not record.ttl or self._ttl.get(service_id) is not None)
                and (not record.cmd or self._proxies.has(service_id))
                and (not record.placeholder or record.listener is not None))

    def known_variant(self, service_id):
        """An id of a service of this supervisord that differs from ``service_id`` only in case, or None."""
        return _variant(service_id, self.records)

    def vet(self, record):
        """Steps: check ``record.pending_checks`` against the agent (a BAD_NAME or SERVICE_NOT_OWNED
        fault if one fails), then clear them; the agent's (service, sidecar) as read."""
        variant, existing, sidecar = yield from self.look_up(record.service_id, record.token_file)
        if variant:
            raise case_clash(record.service_id, variant)
        if OWNER in record.pending_checks and existing is not None \
                and not registration.carries(existing, self.marker):
            raise MeshxFault("SERVICE_NOT_OWNED", "%s is registered in Consul but not by this "
                             "supervisord (force=true takes it over)" % record.service_id)
        record.pending_checks = ()
        return existing, sidecar

    def look_up(self, service_id, token_file=None):
        """Steps, for a service about to start: (an id known here or to the agent that differs
        from ``service_id`` only in case, or None; the agent's service; its sidecar), None for
        what the agent lacks.  ``consul connect proxy -sidecar-for`` matches ids
        case-insensitively.  All from one listing made during the call, never before it: the
        listing of every service that ``list_all`` started (a startMany shares one), else of the
        ids equal to this one's or its sidecar's but for case.  A service with a token of its
        own is read with it (``observe``); the listing is the plugin's."""
        observed = self.observe(service_id, token_file) if token_file else None
        listing = self._listing
        if listing is None or listing.done():
            listing = self.consul(self._listing_for, service_id)
        services = yield listing
        variant = _variant(service_id, list(self.records) + list(services))
        if observed is not None:
            return (variant,) + (yield observed)
        return variant, services.get(service_id), services.get(service_id + SIDECAR_SUFFIX)

    def list_all(self):
        """Start one listing of the agent's services for the starts about to be made."""
        if self._listing is None or self._listing.done():
            self._listing = self.consul(self.agent.services)

    def _listing_for(self, service_id):
        # ids hold only letters, digits, '.' and '-': no character to escape but '.'
        pattern = "(?i)^%s(%s)?$" % (service_id.replace(".", "[.]"), SIDECAR_SUFFIX)
        try:
            return self.agent.services('ID matches "%s"' % pattern)
        except ConsulError as exc:
            if exc.status not in (400, 500):  # an agent without this filter: list everything
                raise
            return self.agent.services()

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
                yield from self.converge(record, repair=True)
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
                self._count_repair()
                self._log("meshx: deregistered %s: registered by this supervisord, no longer wanted"
                          % service_id)
        except MeshxFault:
            pass  # the next periodic pass tries again
        finally:
            self.locks.release(service_id)

    def periodic_pass(self):
        """Steps: one agent call for all services, compared on a worker with what the records
        register (at 1,000 services the comparison would hold supervisord's loop for tens of
        milliseconds); reconcile what differs, collect what is ours and unwanted."""
        desired = [(service_id, record.expected()) for service_id, record in self.records.items()]
        differ, unwanted = yield self.consul(self._compare, desired)
        for service_id, record in list(self.records.items()):
            if self.locks.held(service_id):
                continue  # being worked on: it converges anyway
            if service_id in differ or not record.present or not self.is_local_ok(record):
                self.reconcile(service_id)
        for service_id in unwanted:
            owner = service_id[:-len(SIDECAR_SUFFIX)] if service_id.endswith(SIDECAR_SUFFIX) else service_id
            if service_id not in self.records and owner not in self.records:  # none started since
                self.collect(service_id)

    def _compare(self, desired):
        """Worker: (the ids of ``desired`` [(service id, registration.Expected)] that the agent
        does not hold as expected, the services carrying this instance's marker that none of them
        wants)."""
        services = self.agent.services()
        differ = {service_id for service_id, wanted in desired if not registration.matches(
            wanted, services.get(service_id), services.get(service_id + SIDECAR_SUFFIX))}
        wanted = {service_id for service_id, _wanted in desired}
        wanted.update([service_id + SIDECAR_SUFFIX for service_id in wanted])
        unwanted = [service_id for service_id, view in services.items()
                    if service_id not in wanted and registration.carries(view, self.marker)
                    and not (service_id.endswith(SIDECAR_SUFFIX)  # goes with its service
                             and service_id[:-len(SIDECAR_SUFFIX)] in services)]
        return differ, unwanted


def case_clash(service_id, variant):
    return MeshxFault("BAD_NAME", "%s differs only in case from %s, which is already registered "
                      "(Consul's proxies would take one for the other)" % (service_id, variant))


def _variant(service_id, known_ids):
    folded = service_id.lower()
    return next((known for known in known_ids if known.lower() == folded and known != service_id), None)


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
