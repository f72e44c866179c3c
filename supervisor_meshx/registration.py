"""A service's registration as this plugin sends it, and how it is compared
with what the Consul agent reports.

Consul reads JSON keys case-insensitively (and accepts a few snake_case
aliases), so a template may say ``Connect``, ``connect`` or ``CONNECT``;
``child`` finds such a key whatever its spelling.  Every registration the
plugin sends carries its owner marker and a hash of its own content in
``Meta``, on the service and on its sidecar: the reconciler compares the
agent's answer with the desired registration by that hash and by the fields
that route traffic (sidecar port, upstreams), not by Consul's normalised copy.
"""
import copy
import hashlib
import json
from collections import namedtuple

HASH_KEY = "meshx-hash"


def child(parent, key, create=False):
    """``parent[key]`` (a struct) under Consul's case-insensitive key rules, or None."""
    wanted = key.lower()
    for name, value in parent.items():
        if name.lower().replace("_", "") == wanted and isinstance(value, dict):
            return value
    if create:
        parent[key] = {}
        return parent[key]
    return None


def _value(parent, key):
    wanted = key.lower()
    for name, value in parent.items():
        if name.lower().replace("_", "") == wanted:
            return value
    return None


def _set(parent, key, value):
    for name in [k for k in parent if k.lower().replace("_", "") == key.lower()]:
        del parent[name]
    parent[key] = value


def sidecar_of(registration):
    connect = child(registration, "Connect")
    return child(connect, "SidecarService") if connect is not None else None


def sidecar_port(registration):
    """The sidecar's public port the registration asks for; 0 if it leaves it to the agent."""
    sidecar = sidecar_of(registration)
    return _port(sidecar) if sidecar is not None else 0


def _port(sidecar):
    port = _value(sidecar, "Port")
    return port if isinstance(port, int) and not isinstance(port, bool) and port > 0 else 0


def with_sidecar_port(registration, port):
    """A copy whose sidecar (if any) listens on ``port`` unless the template chose one."""
    registration = copy.deepcopy(registration)
    sidecar = sidecar_of(registration)
    if sidecar is not None and not sidecar_port(registration):
        _set(sidecar, "Port", port)
    return registration


def with_upstreams(registration, definitions):
    """A copy whose sidecar has exactly these upstreams; None without a sidecar."""
    registration = copy.deepcopy(registration)
    sidecar = sidecar_of(registration)
    if sidecar is None:
        return None
    _set(child(sidecar, "Proxy", create=True), "Upstreams", definitions)
    return registration


def owned(registration, marker):
    """A copy with the owner ``marker`` and the content hash in the Meta of the
    service and of its sidecar (Consul would otherwise copy the service's)."""
    registration = copy.deepcopy(registration)
    sidecar = sidecar_of(registration)
    parent_meta = _value(registration, "Meta")
    for part in (registration, sidecar):
        if part is not None:
            meta = _value(part, "Meta")
            if sidecar is part and meta is None:
                meta = parent_meta
            if meta is not None and not isinstance(meta, dict):
                raise ValueError("Meta must be a struct")
            meta = dict(meta or {})
            meta.pop(HASH_KEY, None)
            meta.update(marker)
            _set(part, "Meta", meta)
    digest = content_hash(registration)
    for part in (registration, sidecar):
        if part is not None:
            _value(part, "Meta")[HASH_KEY] = digest
    return registration


def content_hash(registration):
    text = json.dumps(registration, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_ids(definition, service_id):
    """The ids the agent gives the service's checks: ``CheckID``, else ``service:<id>``
    for a lone check and ``service:<id>:<n>`` for the n-th of several."""
    checks = []
    single = _value(definition, "Check")
    if isinstance(single, dict) and single:
        checks.append(single)
    several = _value(definition, "Checks")
    if isinstance(several, list):
        checks.extend(c for c in several if isinstance(c, dict))
    ids = []
    for n, check in enumerate(checks, 1):
        given = _value(check, "CheckID")
        if isinstance(given, str) and given:
            ids.append(given)
        else:
            ids.append("service:%s" % service_id if len(checks) == 1 else "service:%s:%d" % (service_id, n))
    return ids


def carries(agent_service, marker):
    """True if the agent's view of a service carries this owner marker."""
    meta = agent_service.get("Meta") if isinstance(agent_service, dict) else None
    return isinstance(meta, dict) and all(meta.get(k) == v for k, v in marker.items())


# What the agent's views of a service and its sidecar must show for a registration.
Expected = namedtuple("Expected", "digest sidecar port upstreams")


def expected(registration):
    """The ``Expected`` of ``registration``: its content hash (on both views), whether it has a
    sidecar, the sidecar's port (0: the agent's choice) and upstreams."""
    meta = _value(registration, "Meta")
    digest = meta.get(HASH_KEY) if isinstance(meta, dict) else None
    sidecar = sidecar_of(registration)
    if sidecar is None:
        return Expected(digest, False, 0, [])
    return Expected(digest, True, _port(sidecar), _upstream_keys(child(sidecar, "Proxy") or {}))


def matches(wanted, parent, sidecar):
    """Whether the agent's views of the service and its sidecar show the ``Expected``
    ``wanted``: same content hash, sidecar port and upstreams.  The agent answers
    with its own spelling of every key."""
    if not _has_hash(parent, wanted.digest):
        return False
    if not wanted.sidecar:
        return True
    if not _has_hash(sidecar, wanted.digest):
        return False
    if wanted.port and sidecar.get("Port") != wanted.port:
        return False
    proxy = sidecar.get("Proxy")
    return _upstream_keys(proxy if isinstance(proxy, dict) else {}, dict.get) == wanted.upstreams


def _has_hash(view, digest):
    meta = view.get("Meta") if isinstance(view, dict) else None
    return digest is not None and isinstance(meta, dict) and meta.get(HASH_KEY) == digest


def _upstream_keys(proxy, lookup=_value):
    upstreams = lookup(proxy, "Upstreams") or []
    keys = []
    for upstream in upstreams if isinstance(upstreams, list) else []:
        if isinstance(upstream, dict):
            keys.append((lookup(upstream, "DestinationName"), lookup(upstream, "LocalBindPort")))
    return sorted(keys, key=repr)
