"""The catalog's JSON, in Go field order: structs.Node, NodeService, ServiceNode, HealthCheck and
CheckServiceNode, built from a catalog node and the AgentService views synced into it."""

from .endpoints.agent_self import VERSION

_PROXY_FIELDS_BEFORE_MODE = ("EnvoyExtensions", "DestinationServiceName", "DestinationServiceID",
                             "LocalServiceAddress", "LocalServicePort", "LocalServiceSocketPath")


def proxy_view(service):
    """structs.ConnectProxyConfig, which every NodeService carries: Mode, MeshGateway and Expose always."""
    proxy = service.get("Proxy") or {}
    out = {name: proxy[name] for name in _PROXY_FIELDS_BEFORE_MODE if name in proxy}
    out["Mode"] = proxy.get("Mode", "")
    for name in ("TransparentProxy", "Config", "Upstreams"):
        if name in proxy:
            out[name] = proxy[name]
    out["MeshGateway"] = proxy.get("MeshGateway", {})
    out["Expose"] = proxy.get("Expose", {})
    if "AccessLogs" in proxy:
        out["AccessLogs"] = proxy["AccessLogs"]
    return out


def _tagged_node_addresses(address):
    return {"lan": address, "lan_ipv4": address, "wan": address, "wan_ipv4": address}


def _node_meta():
    return {"consul-network-segment": "", "consul-version": VERSION}


def node_view(node):
    return {"ID": node.id, "Node": node.name, "Address": node.address, "Datacenter": node.datacenter,
            "TaggedAddresses": _tagged_node_addresses(node.address), "Meta": _node_meta(),
            "CreateIndex": node.create_index, "ModifyIndex": node.modify_index}


def node_service_view(record):
    service = record.value
    out = {}
    if service.get("Kind"):
        out["Kind"] = service["Kind"]
    out.update(ID=service["ID"], Service=service["Service"], Tags=service["Tags"], Address=service["Address"])
    if service.get("TaggedAddresses"):
        out["TaggedAddresses"] = service["TaggedAddresses"]
    out["Meta"] = service["Meta"]
    if service["Port"]:
        out["Port"] = service["Port"]
    if service.get("SocketPath"):
        out["SocketPath"] = service["SocketPath"]
    out.update(Weights=service["Weights"], EnableTagOverride=service["EnableTagOverride"],
               Proxy=proxy_view(service), Connect=service.get("Connect", {}))
    if service.get("Locality"):
        out["Locality"] = service["Locality"]
    out.update(CreateIndex=record.create_index, ModifyIndex=record.modify_index)
    return out


def service_node_view(node, record):
    """/v1/catalog/service/:name: the instance with its node's fields."""
    service = record.value
    out = {"ID": node.id, "Node": node.name, "Address": node.address, "Datacenter": node.datacenter,
           "TaggedAddresses": _tagged_node_addresses(node.address), "NodeMeta": _node_meta(),
           "ServiceKind": service.get("Kind", ""), "ServiceID": service["ID"], "ServiceName": service["Service"],
           "ServiceTags": service["Tags"], "ServiceAddress": service["Address"]}
    if service.get("TaggedAddresses"):
        out["ServiceTaggedAddresses"] = service["TaggedAddresses"]
    out.update(ServiceWeights=service["Weights"], ServiceMeta=service["Meta"], ServicePort=service["Port"],
               ServiceSocketPath=service.get("SocketPath", ""),
               ServiceEnableTagOverride=service["EnableTagOverride"], ServiceProxy=proxy_view(service),
               ServiceConnect=service.get("Connect", {}))
    if service.get("Locality"):
        out["ServiceLocality"] = service["Locality"]
    out.update(CreateIndex=record.create_index, ModifyIndex=record.modify_index)
    return out


def health_check_view(record):
    return dict(record.value, CreateIndex=record.create_index, ModifyIndex=record.modify_index)


def check_service_node_view(node, record, check_records):
    """/v1/health/service/:name and /v1/health/connect/:name: one instance, its node and their checks."""
    return {"Node": node_view(node), "Service": node_service_view(record),
            "Checks": [health_check_view(check) for check in check_records]}
