"""The desired state of each mesh service: what the operator asked for.

A record is written to the state file before anything in the world changes
for it; the reconciler then makes the world (Consul, the proxy group, the
ports) match it.  ``present`` False means "being removed": the record stays
until the service is gone everywhere, so that a crash in the middle of a stop
still ends in a stop.  A new record is written while the agent is looked at
(``pending_checks``): one restored before its checks passed is checked again
before it is registered.  Records read back from the state file are untrusted
input: ``ServiceRecord.from_json`` checks every field's shape.
"""
from supervisor_meshx import registration as registrations
from supervisor_meshx.health import KINDS as HEALTH_KINDS
from supervisor_meshx.names import SIDECAR_SUFFIX, checked_service_id
from supervisor_meshx.state_file import Versioned
from supervisor_meshx.ttl import STATUSES

# What a new service is checked for before its first registration: no id known that differs from
# its own only in case; no registration of its id by somebody else (unless force takes it over).
CASE, OWNER = "case", "owner"


class ServiceRecord(Versioned):
    def __init__(self, service_id, name, address, port, allocated, registration,
                 sidecar_port=0, admin_port=0, ttl=None, cmd=(), upstreams=(), placeholder=False, health="tcp",
                 token_file=None):
        self.service_id = service_id
        self.name = name
        self.address = address
        self.port = port
        self.allocated = allocated  # the endpoint port came from this plugin's range
        self.registration = registration  # exactly what is sent to the agent
        self.sidecar_port = sidecar_port  # held from sidecar_port_range; 0 if none
        self.admin_port = admin_port  # held from admin_port_range for the proxy's admin API; 0 if none
        self.ttl = ttl  # {id, status, ttl} or None
        self.cmd = list(cmd)
        self.upstreams = {u["name"]: u for u in upstreams}  # in the order connected
        self.placeholder = placeholder  # listen on the endpoint (a proxy-only service)
        self.maintenance = None  # the reason while in maintenance, else None
        self.health = health  # how its proxy is probed: tcp (sidecar port) or envoy (/ready on the admin port)
        self.token_file = token_file  # the service's own ACL token's file (never the token), or None
        self.pending_checks = ()  # of CASE and OWNER: what a start has not checked yet
        self.present = True
        self.registered = False  # the agent has had it since it was desired
        self.deregistered = False  # our own clean shutdown deregistered it
        self.reregistrations = 0
        self.listener = None  # the placeholder's socket; not saved

    @property
    def sidecar_id(self):
        return self.service_id + SIDECAR_SUFFIX

    def expected(self):
        """What the agent's views must show for this registration (``registration.Expected``);
        main thread only."""
        cached = self.__dict__.get("_expected")
        if cached is None or cached[0] is not self.registration:
            cached = (self.registration, registrations.expected(self.registration))
            object.__setattr__(self, "_expected", cached)  # a cache, not a change of the record
        return cached[1]

    def ports(self):
        """Every port this service holds from the plugin's allocators."""
        held = [u["port"] for u in self.upstreams.values()]
        if self.allocated:
            held.append(self.port)
        return held

    def result(self, already_started=False):
        return {"service_id": self.service_id, "address": self.address, "port": self.port,
                "already_started": already_started}

    def to_json(self):
        return {
            "name": self.name, "address": self.address, "port": self.port, "allocated": self.allocated,
            "registration": self.registration, "sidecar_port": self.sidecar_port,
            "admin_port": self.admin_port, "ttl": self.ttl,
            "cmd": self.cmd, "has_proxy": bool(self.cmd), "upstreams": list(self.upstreams.values()),
            "placeholder": self.placeholder, "maintenance": self.maintenance, "health": self.health,
            "token_file": self.token_file, "pending_checks": list(self.pending_checks),
            "present": self.present, "registered": self.registered,
            "deregistered": self.deregistered, "reregistrations": self.reregistrations,
        }

    @classmethod
    def from_json(cls, service_id, saved, saved_cmd=()):
        """A record from the state file; ValueError names what is wrong.

        ``saved_cmd``: the proxy command saved by a version that kept it only
        with the proxy."""
        _expect(isinstance(saved, dict), "not a struct")
        checked_service_id(service_id)
        cmd = saved.get("cmd", list(saved_cmd) if saved.get("has_proxy") else [])
        record = cls(
            service_id,
            _string(saved, "name"),
            _string(saved, "address"),
            _port(saved.get("port"), "port"),
            _bool(saved, "allocated"),
            _struct(saved.get("registration"), "registration"),
            sidecar_port=_port(saved.get("sidecar_port", 0), "sidecar_port", zero=True),
            admin_port=_port(saved.get("admin_port", 0), "admin_port", zero=True),
            ttl=_ttl(saved.get("ttl")),
            cmd=_argv(cmd),
            upstreams=_upstreams(saved.get("upstreams", [])),
            placeholder=_bool(saved, "placeholder"),
            health=saved.get("health", "tcp"),
            token_file=saved.get("token_file"),
        )
        _expect(record.token_file is None or is_token_path(record.token_file), "bad token_file")
        _expect(record.health in HEALTH_KINDS, "bad health")
        maintenance = saved.get("maintenance")
        _expect(maintenance is None or isinstance(maintenance, str) and len(maintenance) <= 1024, "bad maintenance")
        record.maintenance = maintenance
        pending = saved.get("pending_checks", [])
        _expect(isinstance(pending, list) and set(pending) <= {CASE, OWNER}, "bad pending_checks")
        record.pending_checks = tuple(sorted(set(pending)))
        record.present = _bool(saved, "present", True)
        record.registered = _bool(saved, "registered", True)
        record.deregistered = _bool(saved, "deregistered")
        count = saved.get("reregistrations", 0)
        _expect(isinstance(count, int) and not isinstance(count, bool) and count >= 0, "bad reregistrations")
        record.reregistrations = count
        return record


def is_token_path(value):
    return isinstance(value, str) and value.startswith("/") and len(value) <= 4096 and "\0" not in value


def _expect(condition, what):
    if not condition:
        raise ValueError(what)


def _string(saved, key):
    value = saved.get(key)
    _expect(isinstance(value, str) and 0 < len(value) <= 1024, "bad %s" % key)
    return value


def _bool(saved, key, default=False):
    value = saved.get(key, default)
    _expect(isinstance(value, bool), "bad %s" % key)
    return value


def _port(value, what, zero=False):
    _expect(isinstance(value, int) and not isinstance(value, bool)
            and (0 if zero else 1) <= value <= 65535, "bad %s" % what)
    return value


def _struct(value, what):
    _expect(isinstance(value, dict), "bad %s" % what)
    return value


def _argv(value):
    _expect(isinstance(value, list) and all(isinstance(a, str) for a in value), "bad cmd")
    return value


def _ttl(value):
    if value is None:
        return None
    _expect(isinstance(value, dict) and isinstance(value.get("id"), str) and value.get("status") in STATUSES
            and isinstance(value.get("ttl"), int) and not isinstance(value.get("ttl"), bool)
            and value["ttl"] > 0, "bad ttl")
    return {"id": value["id"], "status": value["status"], "ttl": value["ttl"]}


def _upstreams(value):
    _expect(isinstance(value, list), "bad upstreams")
    for upstream in value:
        _expect(isinstance(upstream, dict) and isinstance(upstream.get("name"), str)
                and isinstance(upstream.get("address"), str) and isinstance(upstream.get("definition"), dict),
                "bad upstream")
        _port(upstream.get("port"), "upstream port")
    return value
