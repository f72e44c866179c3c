"""The catalog the Consul servers keep: every node, its services and checks, with raft indexes.

Agents sync their local state into it (anti-entropy; the double syncs at once, on every local change) and the
catalog and health endpoints of every agent read it.  Several doubles sharing one Catalog make a cluster.
Indexes follow Consul's state store: one raft index per write, a per-service-name index for the service, health
and connect queries (bumped by its instances, their checks and their node's checks), the services table's index
for /v1/catalog/services, and the extinction index for names that have no instance (any more).
"""

import collections
import threading
import time

from .checks import CRITICAL, PASSING

SERF_HEALTH = "serfHealth"
SERF_ALIVE_OUTPUT = "Agent alive and reachable"
SERF_FAILED_OUTPUT = "Agent not live or unreachable"


class Record:
    """A value in the state store with the raft indexes of its creation and last change."""

    def __init__(self, value, index, compared=None):
        self.value = value
        self.compared = compared  # what decides whether a new value is a change
        self.create_index = self.modify_index = index


class CatalogNode:
    def __init__(self, name, node_id, address, datacenter):
        self.name = name
        self.id = node_id
        self.address = address
        self.datacenter = datacenter
        self.alive = False
        self.create_index = self.modify_index = 0
        self.serf_health = None  # Record of the serfHealth check's view
        self.services = {}       # service ID -> Record of the AgentService view
        self.checks = {}         # service ID ("" for node-level) -> check ID -> Record of the agent's check view


def service_keys(view):
    """The query indexes a service instance moves: its name's, and for Connect its destination's."""
    keys = {("service", view["Service"])}
    if view.get("Kind") == "connect-proxy":
        keys.add(("connect", view["Proxy"]["DestinationServiceName"]))
    elif (view.get("Connect") or {}).get("Native"):
        keys.add(("connect", view["Service"]))
    return keys


def is_connect_instance(view, name):
    """A sidecar (or other connect-proxy) for the service, or the service itself when Connect-native."""
    if view.get("Kind") == "connect-proxy":
        return view["Proxy"]["DestinationServiceName"] == name
    return view["Service"] == name and bool((view.get("Connect") or {}).get("Native"))


class Catalog:
    """Nodes, services and checks of a datacenter. Every method is atomic under one lock."""

    def __init__(self):
        self.changed = threading.Condition(threading.RLock())
        self.nodes = {}
        self.index = 1               # the last raft index (Consul never answers 0)
        self.services_index = 1      # the services table's
        self.extinction_index = 0    # the last time a service name lost its last instance
        self.key_index = {}          # ("service" | "connect", name) -> index
        self.key_instances = collections.Counter()  # ("service" | "connect", name) -> instances in all nodes

    # -- membership -----------------------------------------------------------------------------------------

    def join(self, name, node_id, address, datacenter):
        """A node's agent is up: the node is (re)registered and its serfHealth passes."""
        with self.changed:
            node = self.nodes.get(name)
            index = self.index + 1
            if node is None:
                node = self.nodes[name] = CatalogNode(name, node_id, address, datacenter)
                node.create_index = index
            node.id, node.address, node.datacenter, node.alive = node_id, address, datacenter, True
            node.modify_index = index
            self._set_serf_health(node, PASSING, SERF_ALIVE_OUTPUT, index)

    def fail(self, name):
        """A node's agent stopped: serfHealth goes critical; its services stay until reaped."""
        with self.changed:
            node = self.nodes.get(name)
            if node is None or not node.alive:
                return
            node.alive = False
            self._set_serf_health(node, CRITICAL, SERF_FAILED_OUTPUT, self.index + 1)

    def _set_serf_health(self, node, status, output, index):
        view = {"Node": node.name, "CheckID": SERF_HEALTH, "Name": "Serf Health Status", "Status": status,
                "Notes": "", "Output": output, "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "",
                "Interval": "", "Timeout": "", "ExposedPort": 0, "Definition": {}, "CreateIndex": 0,
                "ModifyIndex": 0}
        if node.serf_health is None:
            node.serf_health = Record(view, index)
        else:
            node.serf_health.value, node.serf_health.modify_index = view, index
        self._commit(index, self._node_keys(node), services_table=False)

    # -- anti-entropy ---------------------------------------------------------------------------------------

    def sync(self, node_name, services, checks_by_service, service_ids=None):
        """Make the node's catalog entries equal to an alive agent's local services and checks (check ID ->
        check, by service ID, "" for node-level checks): those of ``service_ids`` only, or all of them.
        One raft index for the whole sync, as one anti-entropy pass."""
        with self.changed:
            node = self.nodes.get(node_name)
            if node is None or not node.alive:
                return
            if service_ids is None:
                service_ids = set(services) | set(checks_by_service) | set(node.services) | set(node.checks)
            index = self.index + 1
            keys = set()
            services_changed = self._sync_services(node, services, service_ids, index, keys)
            if self._sync_checks(node, checks_by_service, service_ids, index, keys):
                keys |= self._node_keys(node)
            if keys:
                self._commit(index, keys, services_table=services_changed)

    def _sync_services(self, node, services, service_ids, index, keys):
        changed = False
        for service_id in service_ids:
            service, record = services.get(service_id), node.services.get(service_id)
            if service is None:
                if record is not None:
                    del node.services[service_id]
                    self._count_instance(record.value, -1)
                    keys |= service_keys(record.value)
                    changed = True
                continue
            if record is not None and (record.value is service.view or record.value == service.view):
                continue
            if record is None:
                node.services[service_id] = Record(service.view, index)
            else:
                keys |= service_keys(record.value)
                self._count_instance(record.value, -1)
                record.value, record.modify_index = service.view, index
            self._count_instance(service.view, 1)
            keys |= service_keys(service.view)
            changed = True
        return changed

    def _count_instance(self, view, delta):
        for key in service_keys(view):
            self.key_instances[key] += delta

    def _sync_checks(self, node, checks_by_service, service_ids, index, keys):
        """Returns True when a node-level check changed (it moves every service of the node)."""
        node_level = False
        gone = {}  # a check that left one service's group may come back in another's: the same record
        for service_id in service_ids:
            records, checks = node.checks.get(service_id, {}), checks_by_service.get(service_id, {})
            for check_id in [cid for cid in records if cid not in checks]:
                gone[check_id] = records.pop(check_id)
            if not records:
                node.checks.pop(service_id, None)
        for service_id in service_ids:
            for check_id, check in checks_by_service.get(service_id, {}).items():
                records = node.checks.setdefault(service_id, {})
                record = records.get(check_id) or gone.pop(check_id, None)
                compared = (check.name, check.status, check.output, check.notes, check.service_id,
                            check.service_name, tuple(check.service_tags), check.type)
                if record is not None and record.compared == compared:
                    continue
                view = check.view(node.name)
                if record is None:
                    records[check_id] = Record(view, index, compared)
                else:
                    node_level |= self._check_changed(node, record.value, keys)
                    record.value, record.compared, record.modify_index = view, compared, index
                    records[check_id] = record
                node_level |= self._check_changed(node, view, keys)
        for record in gone.values():
            node_level |= self._check_changed(node, record.value, keys)
        return node_level

    @staticmethod
    def _check_changed(node, view, keys):
        if not view["ServiceID"]:
            return True
        service = node.services.get(view["ServiceID"])
        keys |= service_keys(service.value) if service is not None else {("service", view["ServiceName"])}
        return False

    @staticmethod
    def _node_keys(node):
        keys = set()
        for record in node.services.values():
            keys |= service_keys(record.value)
        return keys

    def _commit(self, index, keys, services_table):
        self.index = index
        if services_table:
            self.services_index = index
        for key in keys:
            self.key_index[key] = index
            if key[0] == "service" and not self.key_instances[key]:
                self.extinction_index = index
        self.changed.notify_all()

    # -- reading --------------------------------------------------------------------------------------------

    def instances(self, wanted):
        """(node, service record) for every service view that ``wanted`` accepts, by node name then ID."""
        with self.changed:
            found = [(node, record) for node in self.nodes.values() for record in node.services.values()
                     if wanted(record.value)]
        return sorted(found, key=lambda item: (item[0].name, item[1].value["ID"]))

    def checks_of(self, node, service_id):
        """The checks of one instance as the health endpoints give them: the node's and its own, by check ID."""
        with self.changed:
            records = [node.serf_health] + list(node.checks.get("", {}).values())
            if service_id:
                records += node.checks.get(service_id, {}).values()
        return sorted(records, key=lambda record: record.value["CheckID"])

    def query_index(self, key):
        """X-Consul-Index of a service, health or connect query: its name's index, else the extinction one."""
        with self.changed:
            if self.key_instances[key] and key in self.key_index:
                return self.key_index[key]
            return self.extinction_index or self.index

    def wait_past(self, current_index, min_index, deadline, serving):
        """A blocking query: until current_index() > min_index, the deadline, or the agent stops."""
        with self.changed:
            while current_index() <= min_index and serving():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.changed.wait(min(remaining, 1.0))
