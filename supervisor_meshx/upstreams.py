"""Upstreams: MeshxConsul's connect/disconnect/list_upstream.

A client node asks for a local endpoint per upstream service; the proxy
service's sidecar listens there and carries the traffic.  Each upstream is
added to the sidecar's ``Proxy.Upstreams`` by registering the proxy service
again with its whole definition, so everything else in it is kept (Consul
keeps the sidecar's port and check states across that).  Calls on one proxy
service run one at a time, so concurrent callers never lose an upstream.
"""
import copy

from supervisor_meshx import templates
from supervisor_meshx.faults import MeshxFault
from supervisor_meshx.names import checked_service_id
from supervisor_meshx.ports import PortsExhausted
from supervisor_meshx.tasks import Wait

DEFAULT_UPSTREAM_TEMPLATE = {
    "DestinationName": "{{name}}",
    "LocalBindAddress": "{{address}}",
    "LocalBindPort": "{{$port$}}",
}
QUEUE_TIMEOUT = 60.0  # seconds a call waits for earlier calls on the same proxy service


class Upstreams:
    def __init__(self, services, ports, settings):
        self._services = services
        self._ports = ports
        self._default_proxy = "upstream-%s" % settings.node_name
        self._template = settings.upstream_template or DEFAULT_UPSTREAM_TEMPLATE
        self._locked = set()

    def connect(self, upstreams, template, proxy):
        wanted = [_upstream_params(u) for u in _checked_list(upstreams, "upstreams")]
        template = _checked_template(template) or self._template
        name, proxy_id = self._proxy_name_and_id(proxy)
        yield from self._lock(proxy_id)
        try:
            if proxy_id not in self._services.ids():
                yield from self._services.start({"name": name, "id": proxy_id}, {}, False, 5000, placeholder=True)
            owned = self._services.owned(proxy_id)
            results, added = [], {}
            for params in wanted:
                known = owned.upstreams.get(params["name"]) or added.get(params["name"])
                results.append(dict(known) if known else self._new(params, template, added))
            if added:
                try:
                    registration = _with_upstreams(owned.registration, [u["definition"] for u in
                                                   list(owned.upstreams.values()) + list(added.values())])
                    yield self._services.consul(self._services.agent.register, registration)
                except MeshxFault:
                    for upstream in added.values():
                        self._ports.release(upstream["port"])
                    raise
                owned.registration = registration
                owned.upstreams.update(added)
                self._services.changed()
            return [_public(r) for r in results]
        finally:
            self._locked.discard(proxy_id)

    def _new(self, params, template, added):
        try:
            port = self._ports.allocate_upstream()
        except PortsExhausted as exc:
            return {"name": params["name"], "error": "no free port: %s" % exc}
        params = dict(params, address=self._ports.address, port=port)
        try:
            definition = _upstream_definition(templates.render(template, params))
        except (templates.TemplateError, MeshxFault) as exc:
            self._ports.release(port)
            return {"name": params["name"], "error": "BAD_TEMPLATE: %s" % getattr(exc, "detail", exc)}
        upstream = {"name": params["name"], "address": params["address"], "port": port, "definition": definition}
        added[params["name"]] = upstream
        return upstream

    def disconnect(self, names, proxy_id, restart_proxy):
        names = [n for n in _checked_list(names, "upstreams") if isinstance(n, str)]
        if not isinstance(restart_proxy, bool):
            raise MeshxFault("BAD_ARGUMENTS", "restart_proxy must be a boolean")
        proxy_id = self._proxy_id(proxy_id)
        yield from self._lock(proxy_id)
        try:
            owned = self._services.owned(proxy_id)
            removed = [n for n in dict.fromkeys(names) if n in owned.upstreams]
            if removed:
                kept = [u for n, u in owned.upstreams.items() if n not in removed]
                registration = _with_upstreams(owned.registration, [u["definition"] for u in kept])
                yield self._services.consul(self._services.agent.register, registration)
                owned.registration = registration
                for name in removed:
                    self._ports.release(owned.upstreams.pop(name)["port"])
                self._services.changed()
            if restart_proxy and owned.has_proxy:
                yield from self._services.proxies.restart(proxy_id)
            return removed
        finally:
            self._locked.discard(proxy_id)

    def names(self, proxy_id):
        return list(self._services.owned(self._proxy_id(proxy_id)).upstreams)

    def _lock(self, proxy_id):
        if proxy_id in self._locked:
            free = yield Wait(lambda: proxy_id not in self._locked, timeout=QUEUE_TIMEOUT)
            if not free:
                raise MeshxFault("INVALID_STATE", "%s is busy with other upstream calls" % proxy_id)
        self._locked.add(proxy_id)

    def _proxy_id(self, proxy_id):
        if not isinstance(proxy_id, str):
            raise MeshxFault("BAD_ARGUMENTS", "proxy_service_id must be a string")
        return checked_service_id(proxy_id or self._default_proxy)

    def _proxy_name_and_id(self, proxy):
        if proxy in ([], "", None):
            return self._default_proxy, self._default_proxy
        if not (isinstance(proxy, list) and len(proxy) == 2 and all(isinstance(p, str) for p in proxy)):
            raise MeshxFault("BAD_ARGUMENTS", "proxy must be [name, id]")
        return checked_service_id(proxy[0], "proxy name"), checked_service_id(proxy[1])


def _checked_list(value, what):
    if not isinstance(value, list):
        raise MeshxFault("BAD_ARGUMENTS", "%s must be a list" % what)
    return value


def _checked_template(template):
    if template in (None, "", {}):
        return None
    if not isinstance(template, dict):
        raise MeshxFault("BAD_ARGUMENTS", "template must be a struct")
    return template


def _upstream_params(upstream):
    if not isinstance(upstream, (str, dict)):
        raise MeshxFault("BAD_ARGUMENTS", "an upstream is a name or a struct with a name")
    try:
        templates.check_data(upstream, "upstream")
    except templates.TemplateError as exc:
        raise MeshxFault("BAD_ARGUMENTS", str(exc))
    params = {"name": upstream} if isinstance(upstream, str) else copy.deepcopy(upstream)
    checked_service_id(params.get("name"), "upstream name")
    return params


def _upstream_definition(value):
    if not isinstance(value, dict):
        raise MeshxFault("BAD_TEMPLATE", "an upstream must render to a struct")
    keys = {k.lower(): k for k in value}
    if not value.get(keys.get("destinationname", "DestinationName")):
        raise MeshxFault("BAD_TEMPLATE", "an upstream needs a DestinationName")
    port = value.get(keys.get("localbindport", "LocalBindPort"))
    if isinstance(port, bool) or not isinstance(port, int) or port < 1:
        raise MeshxFault("BAD_TEMPLATE", "an upstream needs an integer LocalBindPort")
    return value


def _with_upstreams(registration, definitions):
    """A copy of ``registration`` whose sidecar has exactly these upstreams."""
    registration = copy.deepcopy(registration)
    connect = _child(registration, "Connect")
    sidecar = _child(connect, "SidecarService") if connect is not None else None
    if sidecar is None:
        raise MeshxFault("BAD_TEMPLATE", "the proxy service's registration has no Connect.SidecarService")
    proxy = _child(sidecar, "Proxy", create=True)
    for key in [k for k in proxy if k.lower() == "upstreams"]:
        del proxy[key]
    proxy["Upstreams"] = definitions
    return registration


def _child(parent, key, create=False):
    """parent[key] with Consul's case-insensitive keys (snake_case aliases included)."""
    wanted = key.lower()
    for name, value in parent.items():
        if name.lower().replace("_", "") == wanted and isinstance(value, dict):
            return value
    if create:
        parent[key] = {}
        return parent[key]
    return None


def _public(result):
    return {k: v for k, v in result.items() if k != "definition"}
