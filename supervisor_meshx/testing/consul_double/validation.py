"""The agent's validation of a decoded service definition, with Consul's error texts."""

import re


def multierror(errors):
    if len(errors) == 1:
        return "1 error occurred:\n\t* %s\n\n" % errors[0]
    return "%d errors occurred:\n%s\n\n" % (len(errors), "\n".join("\t* " + e for e in errors))


_META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")


def validate_meta(meta):
    if len(meta) > 64:
        return "Node metadata cannot contain more than 64 key/value pairs"
    for key, value in meta.items():
        problem = None
        if key == "":
            problem = "Key cannot be blank"
        elif not _META_KEY.match(key):
            problem = "Key contains invalid characters"
        elif len(key) > 128:
            problem = "Key is too long (limit: 128 characters)"
        elif key.startswith("consul-"):
            problem = "Key prefix 'consul-' is reserved for internal use"
        elif len(value) > 512:
            problem = "Value is too long (limit: 512 characters)"
        if problem:
            return "Couldn't load metadata pair ('%s', '%s'): %s" % (key, value, problem)
    return None


def validate_weights(weights):
    if weights is None:
        return None
    passing, warning = weights.get("Passing", 0), weights.get("Warning", 0)
    if passing < 1:
        return "Invalid Weights: Passing must be greater than 0"
    if warning < 0:
        return "Invalid Weights: Warning must be greater or equal than 0"
    if passing > 65535 or warning > 65535:
        return "Invalid Weights: DNS Weight must be between 0 and 65535"
    return None


def validate_node_service(definition, port_will_be_assigned=False):
    """NodeService.Validate(): the list of problems for a multierror."""
    errors = []
    kind = definition.get("Kind", "")
    proxy = definition.get("Proxy") or {}
    if kind == "connect-proxy":
        destination = proxy.get("DestinationServiceName", "")
        if not destination.strip():
            errors.append("Proxy.DestinationServiceName must be non-empty for Connect proxy services")
        elif destination == "*":
            errors.append("Proxy.DestinationServiceName must not be a wildcard for Connect proxy services")
        if not definition.get("Port") and not definition.get("SocketPath") and not port_will_be_assigned:
            errors.append("Port or SocketPath must be set for a connect-proxy")
        if (definition.get("Connect") or {}).get("Native"):
            errors.append("A Proxy cannot also be Connect Native, only typical services")
        seen = set()
        for upstream in proxy.get("Upstreams") or []:
            name = upstream.get("DestinationName", "")
            if not name:
                errors.append("upstream destination name cannot be empty")
            if not upstream.get("LocalBindPort") and not upstream.get("LocalBindSocketPath"):
                errors.append("upstream local bind port or local socket path must be defined and nonzero")
            address = upstream.get("LocalBindAddress") or "127.0.0.1"
            key = upstream.get("LocalBindSocketPath") or "%s:%d" % (address, upstream.get("LocalBindPort", 0))
            if key in seen:
                errors.append("upstreams cannot contain duplicates of %s" % key)
            seen.add(key)
    elif kind in ("mesh-gateway", "terminating-gateway", "api-gateway") and not definition.get("Port"):
        errors.append("Port must be non-zero for a %s" % kind)
    sidecar = (definition.get("Connect") or {}).get("SidecarService")
    if sidecar is not None:
        if sidecar.get("ID"):
            errors.append("A SidecarService cannot specify an ID as this is managed by the agent")
        if (sidecar.get("Connect") or {}).get("SidecarService") is not None:
            errors.append("A SidecarService cannot have a nested SidecarService")
    return errors
