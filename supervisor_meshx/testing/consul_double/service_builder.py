"""Building the stored service (AgentService JSON) from a definition, and the SidecarService expansion."""

import ipaddress

from .checks import CheckType
from .go_duration import SECOND
from .go_json import omit_empty, sorted_map


PROXY_KINDS = ("connect-proxy", "mesh-gateway", "terminating-gateway", "ingress-gateway", "api-gateway")


class ServiceBuilder:
    """ServiceDefinition → AgentService JSON (normalised), and the SidecarService expansion."""

    def __init__(self, datacenter):
        self.datacenter = datacenter

    def view(self, definition):
        d = definition
        view = {}
        if d.get("Kind"):
            view["Kind"] = d["Kind"]
        view["ID"] = d.get("ID") or d["Name"]
        view["Service"] = d["Name"]
        view["Tags"] = list(d.get("Tags") or [])
        view["Meta"] = sorted_map(d.get("Meta") or {})
        view["Port"] = d.get("Port", 0)
        view["Address"] = d.get("Address", "")
        if d.get("SocketPath"):
            view["SocketPath"] = d["SocketPath"]
        tagged = {name: {"Address": entry.get("Address", ""), "Port": entry.get("Port", 0)}
                  for name, entry in (d.get("TaggedAddresses") or {}).items()}
        self._default_tagged_addresses(tagged, view["Address"], view["Port"])
        if tagged:
            view["TaggedAddresses"] = sorted_map(tagged)
        weights = d.get("Weights")
        view["Weights"] = ({"Passing": 1, "Warning": 1} if weights is None else
                           {"Passing": weights.get("Passing", 0), "Warning": weights.get("Warning", 0)})
        view["EnableTagOverride"] = d.get("EnableTagOverride", False)
        if d.get("Kind") in PROXY_KINDS:
            view["Proxy"] = self._proxy_view(d.get("Proxy") or {})
        if (d.get("Connect") or {}).get("Native"):
            view["Connect"] = {"Native": True}
        view["Datacenter"] = self.datacenter
        locality = omit_empty(d.get("Locality") or {}, ("Region", "Zone"))
        if locality:
            view["Locality"] = locality
        return view

    @staticmethod
    def _default_tagged_addresses(tagged, address, port):
        try:
            version = ipaddress.ip_address(address).version
        except ValueError:
            return
        for name in (("lan_ipv4", "wan_ipv4") if version == 4 else ("lan_ipv6", "wan_ipv6")):
            tagged.setdefault(name, {"Address": address, "Port": port})

    def _proxy_view(self, proxy):
        view = omit_empty(proxy, ("EnvoyExtensions",))
        view["DestinationServiceName"] = proxy.get("DestinationServiceName", "")
        view.update(omit_empty(proxy, ("DestinationServiceID", "LocalServiceAddress", "LocalServicePort",
                                        "LocalServiceSocketPath", "Mode")))
        transparent = omit_empty(proxy.get("TransparentProxy") or {}, ("OutboundListenerPort", "DialedDirectly"))
        if transparent:
            view["TransparentProxy"] = transparent
        if proxy.get("Config"):
            view["Config"] = sorted_map(proxy["Config"])
        upstreams = [self._upstream_view(upstream) for upstream in proxy.get("Upstreams") or []]
        if upstreams:
            view["Upstreams"] = upstreams
        view["MeshGateway"] = omit_empty(proxy.get("MeshGateway") or {}, ("Mode",))
        expose = proxy.get("Expose") or {}
        view["Expose"] = omit_empty(dict(expose, Paths=[
            dict(omit_empty(path, ("ListenerPort", "Path", "LocalPathPort", "Protocol")), ParsedFromCheck=False)
            for path in expose.get("Paths") or []]), ("Checks", "Paths"))
        access_logs = omit_empty(proxy.get("AccessLogs") or {}, ("Enabled", "DisableListenerLogs", "Type",
                                                                  "Path", "JSONFormat", "TextFormat"))
        if access_logs:
            view["AccessLogs"] = access_logs
        return view

    @staticmethod
    def _upstream_view(upstream):
        view = {"DestinationType": upstream.get("DestinationType") or "service"}
        view.update(omit_empty(upstream, ("DestinationPartition", "DestinationNamespace", "DestinationPeer")))
        view["DestinationName"] = upstream.get("DestinationName", "")
        view.update(omit_empty(upstream, ("Datacenter", "LocalBindAddress", "LocalBindPort",
                                           "LocalBindSocketPath", "LocalBindSocketMode")))
        if upstream.get("Config"):
            view["Config"] = sorted_map(upstream["Config"])
        view["MeshGateway"] = omit_empty(upstream.get("MeshGateway") or {}, ("Mode",))
        return view

    @staticmethod
    def sidecar_definition(parent, nested):
        """The sidecar's own ServiceDefinition, Port left 0 when the agent must assign it."""
        parent_id = parent.get("ID") or parent["Name"]
        sidecar = dict(nested)
        sidecar.pop("Connect", None)
        sidecar["ID"] = parent_id + "-sidecar-proxy"
        sidecar["Name"] = nested.get("Name") or parent["Name"] + "-sidecar-proxy"
        sidecar["Kind"] = "connect-proxy"
        sidecar["Address"] = nested.get("Address") or parent.get("Address", "")
        if not nested.get("Tags") and parent.get("Tags"):
            sidecar["Tags"] = list(parent["Tags"])
        if not nested.get("Meta") and parent.get("Meta"):
            sidecar["Meta"] = dict(parent["Meta"])
        proxy = dict(nested.get("Proxy") or {})
        proxy["DestinationServiceName"] = parent["Name"]
        proxy["DestinationServiceID"] = parent_id
        if not proxy.get("LocalServiceSocketPath") and (not proxy.get("LocalServiceAddress")
                                                       or proxy.get("LocalServicePort", 0) < 1):
            if parent.get("SocketPath"):
                proxy["LocalServiceSocketPath"] = parent["SocketPath"]
            else:
                proxy["LocalServiceAddress"] = proxy.get("LocalServiceAddress") or "127.0.0.1"
                if proxy.get("LocalServicePort", 0) < 1:
                    proxy["LocalServicePort"] = parent.get("Port", 0)
        sidecar["Proxy"] = proxy
        if sidecar.get("Port", 0) < 1:
            sidecar["Port"] = 0
        return sidecar

    @staticmethod
    def default_sidecar_checks(sidecar_view, parent_id):
        proxy = sidecar_view["Proxy"]
        address = sidecar_view["Address"] or proxy.get("LocalServiceAddress", "")
        if ":" in address:
            address = "[%s]" % address
        listening = CheckType({"Name": "Connect Sidecar Listening", "TCP": "%s:%d" % (address, sidecar_view["Port"]),
                               "Interval": 10 * SECOND})
        aliasing = CheckType({"Name": "Connect Sidecar Aliasing " + parent_id, "AliasService": parent_id})
        return [listening, aliasing]
