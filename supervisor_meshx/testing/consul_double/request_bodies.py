"""The Go structs request bodies are decoded into: field names, types and snake_case aliases."""

from .go_json import ANY, BOOL, DURATION, INT, STRING, ListOf, MapOf, Struct


def _duration_fields(*names):
    return {name: DURATION for name in names}


_CHECK_TYPE_FIELDS = dict(
    {name: STRING for name in ("Name", "Status", "Notes", "HTTP", "Method", "Body", "TCP", "UDP", "GRPC",
                               "H2PING", "OSService", "AliasNode", "AliasService", "DockerContainerID", "Shell",
                               "TLSServerName")},
    **{name: BOOL for name in ("DisableRedirects", "TCPUseTLS", "GRPCUseTLS", "H2PingUseTLS", "TLSSkipVerify")},
    **{name: INT for name in ("SuccessBeforePassing", "FailuresBeforeWarning", "FailuresBeforeCritical",
                              "OutputMaxSize")},
    **_duration_fields("Interval", "Timeout", "TTL", "DeregisterCriticalServiceAfter"),
    ScriptArgs=ListOf(STRING), Header=MapOf(ListOf(STRING)))
_CHECK_TYPE_ALIASES = {"args": "ScriptArgs", "script_args": "ScriptArgs",
                       "deregister_critical_service_after": "DeregisterCriticalServiceAfter",
                       "docker_container_id": "DockerContainerID", "tls_server_name": "TLSServerName",
                       "tls_skip_verify": "TLSSkipVerify", "grpc_use_tls": "GRPCUseTLS",
                       "h2ping_use_tls": "H2PingUseTLS", "service_id": "ServiceID"}

CHECK_TYPE = Struct("structs.CheckType", dict(_CHECK_TYPE_FIELDS, CheckID=STRING, ServiceID=STRING),
                    _CHECK_TYPE_ALIASES)
CHECK_DEFINITION = Struct("structs.CheckDefinition",
                          dict(_CHECK_TYPE_FIELDS, ID=STRING, ServiceID=STRING, Token=STRING),
                          _CHECK_TYPE_ALIASES)
CHECK_UPDATE = Struct("agent.checkUpdate", {"Status": STRING, "Output": STRING})

_MESH_GATEWAY = Struct("structs.MeshGatewayConfig", {"Mode": STRING})
_UPSTREAM = Struct("structs.Upstream", dict(
    {name: STRING for name in ("DestinationType", "DestinationNamespace", "DestinationPartition",
                               "DestinationPeer", "DestinationName", "Datacenter", "LocalBindAddress",
                               "LocalBindSocketPath", "LocalBindSocketMode")},
    LocalBindPort=INT, Config=MapOf(ANY), MeshGateway=_MESH_GATEWAY, CentrallyConfigured=BOOL),
    {"destination_type": "DestinationType", "destination_namespace": "DestinationNamespace",
     "destination_partition": "DestinationPartition", "destination_peer": "DestinationPeer",
     "destination_name": "DestinationName", "local_bind_address": "LocalBindAddress",
     "local_bind_port": "LocalBindPort", "local_bind_socket_path": "LocalBindSocketPath",
     "local_bind_socket_mode": "LocalBindSocketMode", "mesh_gateway": "MeshGateway"})
_EXPOSE_PATH = Struct("structs.ExposePath", {"ListenerPort": INT, "Path": STRING, "LocalPathPort": INT,
                                             "Protocol": STRING},
                      {"listener_port": "ListenerPort", "local_path_port": "LocalPathPort"})
_PROXY = Struct("structs.ConnectProxyConfig", {
    "DestinationServiceName": STRING, "DestinationServiceID": STRING, "LocalServiceAddress": STRING,
    "LocalServicePort": INT, "LocalServiceSocketPath": STRING, "Mode": STRING,
    "TransparentProxy": Struct("structs.TransparentProxyConfig", {"OutboundListenerPort": INT,
                                                                  "DialedDirectly": BOOL},
                               {"outbound_listener_port": "OutboundListenerPort",
                                "dialed_directly": "DialedDirectly"}),
    "Config": MapOf(ANY), "Upstreams": ListOf(_UPSTREAM), "MeshGateway": _MESH_GATEWAY,
    "Expose": Struct("structs.ExposeConfig", {"Checks": BOOL, "Paths": ListOf(_EXPOSE_PATH)}),
    "AccessLogs": Struct("structs.AccessLogsConfig", {"Enabled": BOOL, "DisableListenerLogs": BOOL,
                                                      "Type": STRING, "Path": STRING, "JSONFormat": STRING,
                                                      "TextFormat": STRING}),
    "EnvoyExtensions": ListOf(ANY)},
    {"destination_service_name": "DestinationServiceName", "destination_service_id": "DestinationServiceID",
     "local_service_address": "LocalServiceAddress", "local_service_port": "LocalServicePort",
     "local_service_socket_path": "LocalServiceSocketPath", "mesh_gateway": "MeshGateway",
     "transparent_proxy": "TransparentProxy", "access_logs": "AccessLogs"})

_SERVICE_FIELDS = {
    "Kind": STRING, "ID": STRING, "Name": STRING, "Tags": ListOf(STRING), "Address": STRING,
    "SocketPath": STRING, "Meta": MapOf(STRING), "Port": INT, "Token": STRING, "EnableTagOverride": BOOL,
    "TaggedAddresses": MapOf(Struct("structs.ServiceAddress", {"Address": STRING, "Port": INT})),
    "Weights": Struct("structs.Weights", {"Passing": INT, "Warning": INT}),
    "Check": CHECK_TYPE, "Checks": ListOf(CHECK_TYPE), "Proxy": _PROXY,
    "Locality": Struct("structs.Locality", {"Region": STRING, "Zone": STRING})}
_SERVICE_ALIASES = {"enable_tag_override": "EnableTagOverride", "tagged_addresses": "TaggedAddresses"}
SERVICE_DEFINITION = Struct("structs.ServiceDefinition", dict(_SERVICE_FIELDS), _SERVICE_ALIASES)
SERVICE_DEFINITION.add_field("Connect", Struct("structs.ServiceConnect", {
    "Native": BOOL, "SidecarService": SERVICE_DEFINITION}, {"sidecar_service": "SidecarService"}, lenient=True))
