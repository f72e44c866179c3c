"""The agent's local state: services, checks and the runners that keep checks up to date."""

import collections
import hashlib
import heapq
import ipaddress
import itertools
import json
import threading
import time
import uuid

from .check_runners import CheckClock, Prober, TtlTimer, http_probe, tcp_probe
from .checks import (CRITICAL, DEFAULT_MAINTENANCE_REASON, MAINTENANCE, MAINTENANCE_CHECK_PREFIX,
                     NODE_MAINTENANCE_CHECK, PASSING, WARNING, LocalCheck, truncate_output)
from .errors import HTTPError
from .go_duration import SECOND


SCRIPTS_DISABLED = ("Scripts are disabled on this agent from remote calls; "
                    "to enable, configure 'enable_script_checks' to true")


class LocalService:
    def __init__(self, view, token, sidecar_of=None):
        self.view = view              # AgentService JSON without ContentHash
        self.token = token
        self.sidecar_of = sidecar_of  # parent ID when created by SidecarService expansion

    @property
    def id(self):
        return self.view["ID"]

    @property
    def name(self):
        return self.view["Service"]

    def content_hash(self):
        return hashlib.sha256(json.dumps(self.view, sort_keys=True).encode()).hexdigest()[:16]


class AgentState:
    """Services and checks of the local agent. Every method is atomic under one lock."""

    def __init__(self, node_name, datacenter, sidecar_port_range, address, catalog):
        self.node_name = node_name
        self.node_id = str(uuid.uuid4())
        self.address = address
        self.catalog = catalog  # where anti-entropy syncs this agent's services and checks
        self.datacenter = datacenter
        self.sidecar_port_range = sidecar_port_range
        self.changed = threading.Condition(threading.RLock())
        self.services = {}
        self.checks = {}
        self._checks_by_service = {}  # service ID ("" for node-level) -> check ID -> LocalCheck
        self._aliases_by_target = {}  # AliasService ("" for the node) -> check ID -> alias LocalCheck
        self._ports = collections.Counter()  # port -> local services on it
        self._check_order = itertools.count()  # the order of self.checks, for the alias checks' refresh
        self._touched = set()  # service IDs ("" for the node) changed since the last _changed()
        self.clock = CheckClock("consul-double-" + node_name)  # runs while the agent serves

    @property
    def lock(self):
        return self.changed

    # -- services -------------------------------------------------------------------------------------------

    def add_service(self, view, check_types, token, replace_existing_checks, sidecar_of=None):
        """AddService: validation that only the agent does (500 on failure), then the registration."""
        with self.lock:
            self._validate_tagged_addresses(view)
            for check in check_types:
                if check.get("ScriptArgs"):
                    raise HTTPError(500, SCRIPTS_DISABLED)
            service = LocalService(view, token, sidecar_of)
            self._put_service(service)
            wanted = []
            for index, check in enumerate(check_types):
                if check.get("CheckID"):
                    check_id = check.get("CheckID")
                elif len(check_types) == 1:
                    check_id = "service:" + service.id
                else:
                    check_id = "service:%s:%d" % (service.id, index + 1)
                name = check.get("Name") or "Service '%s' check" % service.name
                self._put_check(LocalCheck(check_id, name, check, check.get("Status") or CRITICAL, service,
                                           notes=check.get("Notes", "")))
                wanted.append(check_id)
            if replace_existing_checks:
                for check_id in [cid for cid in self._checks_by_service.get(service.id, {}) if cid not in wanted]:
                    self._drop_check(check_id)
            self._changed()
            return service

    def _put_service(self, service):
        old = self.services.get(service.id)
        if old is not None:
            self._ports[old.view["Port"]] -= 1
        self.services[service.id] = service
        self._ports[service.view["Port"]] += 1
        self._touched.add(service.id)

    def _validate_tagged_addresses(self, view):
        for name, wanted in (("lan_ipv4", 4), ("wan_ipv4", 4), ("lan_ipv6", 6), ("wan_ipv6", 6)):
            entry = view.get("TaggedAddresses", {}).get(name)
            if entry is None:
                continue
            try:
                ok = ipaddress.ip_address(entry["Address"]).version == wanted
            except ValueError:
                ok = False
            if not ok:
                raise HTTPError(500, 'Service tagged address "%s" must be a valid ipv%d address' % (name, wanted))

    def remove_service(self, service_id):
        with self.lock:
            removed = self.services.pop(service_id, None)
            if removed is None:
                return False
            self._ports[removed.view["Port"]] -= 1
            self._touched.add(service_id)
            for check_id in list(self._checks_by_service.get(service_id, {})):
                self._drop_check(check_id)
            sidecar = self.services.get(service_id + "-sidecar-proxy")
            if sidecar is not None and sidecar.sidecar_of == service_id:
                self.remove_service(sidecar.id)
            self._changed()
            return True

    def sidecar_port(self, sidecar_id):
        """Reuse the sidecar's in-range port, else the lowest in-range port no local service uses."""
        low, high = self.sidecar_port_range or (0, 0)
        if low < 1 or high < low:
            raise HTTPError(500, "no port provided for sidecar_service and auto-assignment disabled in config")
        existing = self.services.get(sidecar_id)
        if existing is not None and low <= existing.view["Port"] <= high:
            return existing.view["Port"]
        for port in range(low, high + 1):
            if not self._ports[port]:
                return port
        raise HTTPError(500, "no port provided for sidecar_service and none left in the configured range "
                             "[%d, %d]" % (low, high))

    # -- checks ---------------------------------------------------------------------------------------------

    def add_check(self, check_id, name, check_type, status, service, notes):
        with self.lock:
            if check_type.get("ScriptArgs"):
                raise HTTPError(500, SCRIPTS_DISABLED)
            self._put_check(LocalCheck(check_id, name, check_type, status, service, notes=notes))
            self._changed()

    def _put_check(self, check):
        old = self.checks.get(check.id)
        if old is not None:
            # re-registration keeps the status the check had, whatever the request says
            check.status, check.output = old.status, old.output
            check.critical_since = old.critical_since
            check.order = old.order
            self._stop_runner(old)
            self._unindex_check(old)
        else:
            check.order = next(self._check_order)
        self.checks[check.id] = check
        self._index_check(check)
        self._start_runner(check)

    def _index_check(self, check):
        self._checks_by_service.setdefault(check.service_id, {})[check.id] = check
        if check.type == "alias":
            self._aliases_by_target.setdefault(check.check_type.get("AliasService", ""), {})[check.id] = check
        self._touched.add(check.service_id)

    def _unindex_check(self, check):
        _discard(self._checks_by_service, check.service_id, check.id)
        if check.type == "alias":
            _discard(self._aliases_by_target, check.check_type.get("AliasService", ""), check.id)
        self._touched.add(check.service_id)

    def _start_runner(self, check):
        fields = check.check_type.fields if check.check_type else {}
        interval = max(fields.get("Interval", 0), SECOND) / SECOND
        timeout = (fields.get("Timeout", 0) or 10 * SECOND) / SECOND
        if check.type == "ttl":
            check.runner = TtlTimer(self, check.id, fields["TTL"] / SECOND, self.clock)
        elif check.type == "tcp":
            check.runner = Prober(self, check.id, tcp_probe(fields["TCP"], timeout), interval, self.clock)
        elif check.type == "http":
            check.runner = Prober(self, check.id, http_probe(check.check_type, timeout), interval, self.clock)

    @staticmethod
    def _stop_runner(check):
        if check.runner is not None:
            check.runner.stop()
            check.runner = None

    def _drop_check(self, check_id):
        check = self.checks.pop(check_id, None)
        if check is not None:
            self._stop_runner(check)
            self._unindex_check(check)

    def remove_check(self, check_id):
        with self.lock:
            if check_id not in self.checks:
                return False
            self._drop_check(check_id)
            self._changed()
            return True

    def update_ttl(self, check_id, status, output):
        with self.lock:
            check = self.checks[check_id]
            check.last_ttl_output = output
            self._set_status(check, status, truncate_output(output))
            self._stop_runner(check)
            self._start_runner(check)
            self._changed()

    def expire_ttl(self, check_id, timer):
        with self.lock:
            check = self.checks.get(check_id)
            if check is None or check.runner is not timer:
                return
            output = "TTL expired"
            if check.last_ttl_output:
                output += " (last output before timeout follows): " + check.last_ttl_output
            self._set_status(check, CRITICAL, truncate_output(output))
            self._changed()

    def set_probe_result(self, check_id, prober, status, output):
        with self.lock:
            check = self.checks.get(check_id)
            if check is None or check.runner is not prober:
                return
            if (check.status, check.output) != (status, output):
                self._set_status(check, status, truncate_output(output))
                self._changed()

    def _set_status(self, check, status, output):
        self._touched.add(check.service_id)
        if status == CRITICAL and check.status != CRITICAL:
            check.critical_since = time.monotonic()
        elif status != CRITICAL:
            check.critical_since = None
        check.status, check.output = status, output

    # -- maintenance ----------------------------------------------------------------------------------------

    def enable_maintenance(self, service_id, reason):
        with self.lock:
            check_id = MAINTENANCE_CHECK_PREFIX + service_id
            if check_id not in self.checks:
                self._put_check(LocalCheck(check_id, "Service Maintenance Mode", None, CRITICAL,
                                           self.services[service_id], notes=reason or DEFAULT_MAINTENANCE_REASON))
                self._changed()

    def disable_maintenance(self, service_id):
        self.remove_check(MAINTENANCE_CHECK_PREFIX + service_id)

    # -- reading --------------------------------------------------------------------------------------------

    def checks_of(self, service_id):
        """The checks that make a service's health: its own plus every node-level check."""
        with self.lock:
            return sorted(self._service_and_node_checks(service_id), key=lambda check: check.order)

    def _service_and_node_checks(self, service_id):
        checks = list(self._checks_by_service.get("", {}).values())
        if service_id:
            checks += self._checks_by_service.get(service_id, {}).values()
        return checks

    def health(self, service_id):
        checks = self.checks_of(service_id)
        ids = {check.id for check in checks}
        if NODE_MAINTENANCE_CHECK in ids or MAINTENANCE_CHECK_PREFIX + service_id in ids:
            return MAINTENANCE, checks
        for status in (CRITICAL, WARNING):
            if any(check.status == status for check in checks):
                return status, checks
        return PASSING, checks

    def wait_for_change(self, service_id, content_hash, deadline, serving):
        """Block until the service's ContentHash differs from content_hash, the deadline, or the agent stops."""
        with self.changed:
            while time.monotonic() < deadline and serving():
                service = self.services.get(service_id)
                if service is None or service.content_hash() != content_hash:
                    return
                self.changed.wait(min(deadline - time.monotonic(), 1.0))

    def wipe(self):
        with self.lock:
            for check in list(self.checks):
                self._drop_check(check)
            self.services.clear()
            self._ports.clear()
            self._touched.clear()
            self.sync_catalog()
            self.changed.notify_all()

    def reap_critical(self):
        """DeregisterCriticalServiceAfter: drop services whose check has been critical too long."""
        now = time.monotonic()
        with self.lock:
            for check in list(self.checks.values()):
                limit = check.check_type.get("DeregisterCriticalServiceAfter", 0) if check.check_type else 0
                if (limit and check.critical_since is not None and check.service_id in self.services
                        and now - check.critical_since >= max(limit, 60 * SECOND) / SECOND):
                    self.remove_service(check.service_id)

    # -- after every change: alias checks, the catalog sync, waiters ------------------------------------------

    def _changed(self):
        """What the change touched (self._touched) moves the alias checks of those services, then the catalog
        entries of every service touched, in one sync."""
        self._refresh_aliases()
        touched, self._touched = self._touched, set()
        self.catalog.sync(self.node_name, self.services, self._checks_by_service, touched)
        self.changed.notify_all()

    def sync_catalog(self):
        """All of the local state into the catalog (at start, when the node comes back, and after a wipe)."""
        with self.lock:
            self.catalog.sync(self.node_name, self.services, self._checks_by_service)

    def _aliases_of(self, service_id):
        """The alias checks whose result may follow a change of the service's checks ("": the node's)."""
        if service_id == "":
            return [check for group in self._aliases_by_target.values() for check in group.values()]
        return list(self._aliases_by_target.get(service_id, {}).values())

    def _refresh_aliases(self):
        # Rounds over the alias checks in registration order, as if every alias were looked at, but only those
        # that can move are: those aliasing a touched service, and a touched service's own (new ones).
        # An alias that moves touches its service: the aliases of that one later in the order follow in the
        # same round, earlier ones in the next.
        pending = {}
        for service_id in self._touched:
            for check in self._aliases_of(service_id):
                pending[check.id] = check
            for check in self._checks_by_service.get(service_id, {}).values():
                if check.type == "alias":
                    pending[check.id] = check
        for _ in range(5):  # aliases of aliases settle in a few rounds
            if not pending:
                return
            queue = [(check.order, check) for check in pending.values()]
            heapq.heapify(queue)
            queued, pending = set(pending), {}
            while queue:
                order, check = heapq.heappop(queue)
                status, output = self._alias_result(check.check_type)
                if (check.status, check.output) == (status, output):
                    continue
                self._set_status(check, status, output)
                for follower in self._aliases_of(check.service_id):
                    if follower.order > order and follower.id not in queued:
                        heapq.heappush(queue, (follower.order, follower))
                        queued.add(follower.id)
                    elif follower.order <= order:
                        pending[follower.id] = follower

    def _alias_result(self, check_type):
        node, service_id = check_type.get("AliasNode", ""), check_type.get("AliasService", "")
        if node and node != self.node_name:
            return CRITICAL, "Node %s could not be found" % node  # remote aliases are not supported
        status, output = PASSING, "No checks found."
        # the service's checks and the node-level ones (service_id ""), in check-id order
        for check in sorted(self._service_and_node_checks(service_id), key=lambda c: c.id):
            if check.status in (CRITICAL, WARNING):
                status, output = check.status, 'Aliased check "%s" failing: %s' % (check.name, check.output)
                if check.status == CRITICAL:
                    break
            elif status == PASSING:
                output = "All checks passing."
        if service_id and service_id not in self.services:
            return CRITICAL, "Service %s could not be found on node %s" % (service_id, node)
        return status, output


def _discard(index, key, check_id):
    group = index.get(key)
    if group is not None:
        group.pop(check_id, None)
        if not group:
            del index[key]
