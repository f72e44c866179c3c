"""Upstreams: MeshxConsul's connect/disconnect/list_upstream.

A client node asks for a local endpoint per upstream service; the proxy
service's sidecar listens there and carries the traffic.  Each upstream is
added to the sidecar's ``Proxy.Upstreams`` by registering the proxy service
again with its whole definition, so everything else in it is kept (Consul
keeps the check states across that; the sidecar's port is the plugin's own).
The upstreams, their ports included, are desired state like the rest of the
service; calls on one proxy service run one at a time, so concurrent callers
never lose an upstream.
"""
import copy

from supervisor_meshx import limits, registration, templates
from supervisor_meshx.faults import MeshxFault
from supervisor_meshx.names import checked_service_id
from supervisor_meshx.ports import PortsExhausted

DEFAULT_UPSTREAM_TEMPLATE = {
    "DestinationName": "{{name}}",
    "LocalBindAddress": "{{address}}",
    "LocalBindPort": "{{$port$}}",
}


class Upstreams:
    def __init__(self, services, reconciler, ports, settings):
        self._services = services
        self._reconciler = reconciler
        self._ports = ports
        self._default_proxy = "upstream-%s" % settings.node_name
        self._template = settings.upstream_template or DEFAULT_UPSTREAM_TEMPLATE

    def connect(self, upstreams, template, proxy):
        wanted = [_upstream_params(u) for u in _checked_list(upstreams, "upstreams")]
        template = _checked_template(template) or self._template
        name, proxy_id = self._proxy_name_and_id(proxy)
        return (yield from self._services.locked(proxy_id, self._connect(wanted, template, name, proxy_id)))

    def _connect(self, wanted, template, name, proxy_id):
        record = self._services.records.get(proxy_id)
        if record is None or not record.present:
            yield from self._services.start_locked({"name": name, "id": proxy_id}, {}, False, 5000,
                                                   placeholder=True)
            record = self._services.records[proxy_id]
        results, added = [], {}
        for params in wanted:
            known = record.upstreams.get(params["name"]) or added.get(params["name"])
            results.append(dict(known) if known else self._new(params, template, added))
        if added:
            try:
                yield from self._change(record, list(record.upstreams.values()) + list(added.values()))
            except Exception:
                for upstream in added.values():
                    self._ports.release(upstream["port"])
                raise
        return [_public(r) for r in results]

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
        return (yield from self._services.locked(proxy_id, self._disconnect(names, proxy_id, restart_proxy)))

    def _disconnect(self, names, proxy_id, restart_proxy):
        record = self._services.owned(proxy_id)
        removed = [n for n in dict.fromkeys(names) if n in record.upstreams]
        if removed:
            gone = [record.upstreams[n]["port"] for n in removed]
            yield from self._change(record, [u for n, u in record.upstreams.items() if n not in removed])
            for port in gone:
                self._ports.release(port)
        if restart_proxy and record.cmd:
            yield from self._services.proxies.restart(proxy_id)
        return removed

    def _change(self, record, upstreams):
        """Steps: make ``upstreams`` the desired upstreams of ``record`` and converge;
        on failure the desired state is what it was (and the agent is brought back to it)."""
        definition = registration.with_upstreams(record.registration, [u["definition"] for u in upstreams])
        if definition is None:
            raise MeshxFault("BAD_TEMPLATE", "the proxy service's registration has no Connect.SidecarService")
        before = record.registration, record.upstreams
        record.registration = registration.owned(definition, self._reconciler.marker)
        record.upstreams = {u["name"]: u for u in upstreams}
        try:
            yield self._services.save()
            yield from self._reconciler.converge(record)
        except Exception:
            record.registration, record.upstreams = before
            self._services.save()
            raise

    def names(self, proxy_id):
        return list(self._services.owned(self._proxy_id(proxy_id)).upstreams)

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
    if not isinstance(value, list) or len(value) > limits.MAX_UPSTREAMS:
        raise MeshxFault("BAD_ARGUMENTS", "%s must be a list of at most %d" % (what, limits.MAX_UPSTREAMS))
    return value


def _checked_template(template):
    if template in (None, "", {}):
        return None
    if not isinstance(template, dict):
        raise MeshxFault("BAD_ARGUMENTS", "template must be a struct")
    limits.check_size(template, limits.MAX_TEMPLATE, "template")
    return template


def _upstream_params(upstream):
    if not isinstance(upstream, (str, dict)):
        raise MeshxFault("BAD_ARGUMENTS", "an upstream is a name or a struct with a name")
    limits.check_size(upstream, limits.MAX_SERVICE, "an upstream")
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


def _public(result):
    return {k: v for k, v in result.items() if k != "definition"}
