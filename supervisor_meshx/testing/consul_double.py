"""A stateful Consul agent test double speaking real HTTP on 127.0.0.1.

It follows /work/shared/consul-agent-api.md (the behaviour of a Consul CE 1.16-1.21 agent): status codes,
plain-text error bodies, Go-style strict JSON decoding, sidecar expansion, check runners (TTL timers, TCP and
HTTP probes, alias checks), the health endpoints and ACLs.  Standard library only.

Behaviours of a real deployment it can be told to show (knobs): an agent whose cluster has no leader yet
refuses registrations with ``500 could not retrieve initial service_defaults config for service "<id>": ...``
(``not_ready_for``); answers that come too late for the client though the request was applied
(``reply_latency``); slow handling (``latency``); injected error answers (``inject_errors``); a restart
without data (``wipe``).  Not modelled here because it is not the agent's doing: ``consul connect proxy
-sidecar-for`` matches service ids case-insensitively ("More than one sidecar proxy registered"), which is
why the plugin refuses ids that differ only in case.

    with ConsulDouble() as agent:
        requests.put(agent.url + "/v1/agent/service/register", json={"Name": "web"})
"""

import argparse
import gzip
import hashlib
import ipaddress
import json
import random
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote

__all__ = ["ConsulDouble", "LoggedRequest"]

VERSION = "1.20.0"
ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"
PASSING, WARNING, CRITICAL, MAINTENANCE = "passing", "warning", "critical", "maintenance"
CHECK_STATUSES = (PASSING, WARNING, CRITICAL)
OUTPUT_MAX_SIZE = 4096
PROXY_KINDS = ("connect-proxy", "mesh-gateway", "terminating-gateway", "ingress-gateway", "api-gateway")
MAINTENANCE_CHECK_PREFIX = "_service_maintenance:"
NODE_MAINTENANCE_CHECK = "_node_maintenance"
DEFAULT_MAINTENANCE_REASON = ("Maintenance mode is enabled for this service, but no reason was provided. "
                              "This is a default message.")
SCRIPTS_DISABLED = ("Scripts are disabled on this agent from remote calls; "
                    "to enable, configure 'enable_script_checks' to true")
SECOND = 10 ** 9


class HTTPError(Exception):
    """An answer other than success: the status, a plain-text body (Go error string) and extra headers."""

    def __init__(self, status, body, headers=None, content_type="text/plain; charset=utf-8"):
        Exception.__init__(self, "%d %s" % (status, body))
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.content_type = content_type


def bad_request(reason):
    return HTTPError(400, reason)


# --------------------------------------------------------------------------------------------------------------
# Go durations


class GoDuration:
    """Go's time.ParseDuration and Duration.String, in integer nanoseconds."""

    UNITS = {"ns": 1, "us": 10 ** 3, "\u00b5s": 10 ** 3, "\u03bcs": 10 ** 3, "ms": 10 ** 6, "s": SECOND,
             "m": 60 * SECOND, "h": 3600 * SECOND}
    _NUMBER = re.compile(r"([0-9]*)(?:\.([0-9]*))?")
    _UNIT = re.compile(r"[^0-9.]*")

    @classmethod
    def parse(cls, text):
        quoted = json.dumps(text, ensure_ascii=False)
        invalid = ValueError("time: invalid duration " + quoted)
        rest, negative = text, False
        if rest[:1] in ("-", "+"):
            negative, rest = rest[0] == "-", rest[1:]
        if rest == "0":
            return 0
        if not rest:
            raise invalid
        total = 0
        while rest:
            number = cls._NUMBER.match(rest)
            whole, frac = number.group(1), number.group(2)
            if not whole and not frac:
                raise invalid
            rest = rest[number.end():]
            unit = cls._UNIT.match(rest).group()
            rest = rest[len(unit):]
            if not unit:
                raise ValueError("time: missing unit in duration " + quoted)
            if unit not in cls.UNITS:
                raise ValueError("time: unknown unit %s in duration %s"
                                 % (json.dumps(unit, ensure_ascii=False), quoted))
            scale = cls.UNITS[unit]
            total += int(whole or 0) * scale
            if frac:
                total += int(int(frac) * scale / 10 ** len(frac))
        return -total if negative else total

    @classmethod
    def format(cls, ns):
        if ns == 0:
            return "0s"
        sign, ns = ("-" if ns < 0 else ""), abs(int(ns))
        if ns < SECOND:
            for unit, size in (("ms", 10 ** 6), ("\u00b5s", 10 ** 3), ("ns", 1)):
                if ns >= size:
                    return sign + cls._fraction(ns, size) + unit
        hours, rest = divmod(ns, 3600 * SECOND)
        minutes, rest = divmod(rest, 60 * SECOND)
        seconds = cls._fraction(rest, SECOND) + "s"
        if hours:
            return "%s%dh%dm%s" % (sign, hours, minutes, seconds)
        if minutes:
            return "%s%dm%s" % (sign, minutes, seconds)
        return sign + seconds

    @staticmethod
    def _fraction(value, size):
        whole, frac = divmod(value, size)
        if not frac:
            return str(whole)
        return "%d.%s" % (whole, str(frac).rjust(len(str(size)) - 1, "0").rstrip("0"))


# --------------------------------------------------------------------------------------------------------------
# Go-style JSON decoding (encoding/json with DisallowUnknownFields)


class DecodeError(Exception):
    pass


class _Pairs(list):
    """A JSON object as decoded: its (key, value) pairs in document order."""


class _Number(float):
    """A JSON number with a fraction or exponent, remembering its literal for Go's error text."""

    def __new__(cls, literal):
        number = float.__new__(cls, literal)
        number.literal = literal
        return number


class Scalar:
    def __init__(self, go_type):
        self.go_type = go_type


STRING, INT, BOOL, DURATION, ANY = (Scalar("string"), Scalar("int"), Scalar("bool"),
                                    Scalar("time.Duration"), Scalar("interface {}"))


class ListOf:
    def __init__(self, item):
        self.item = item
        self.go_type = "[]" + item.go_type


class MapOf:
    def __init__(self, value):
        self.value = value
        self.go_type = "map[string]" + value.go_type


class Struct:
    """A Go struct: canonical field names (matched case-insensitively) plus explicit snake_case aliases."""

    def __init__(self, go_type, fields, aliases=None, lenient=False):
        self.go_type = go_type
        self.fields = fields
        self.lenient = lenient  # decoded with plain json.Unmarshal: unknown keys are ignored
        self.keys = {name.lower(): name for name in fields}
        for alias, name in (aliases or {}).items():
            self.keys[alias.lower()] = name

    def add_field(self, name, kind):
        """For recursive structs (a SidecarService is a ServiceDefinition)."""
        self.fields[name] = kind
        self.keys[name.lower()] = name


def _struct_name(struct):
    return struct.go_type.rsplit(".", 1)[-1]


class GoJSONDecoder:
    """Decodes a request body the way Consul's decodeBody does, with Go's error texts."""

    def decode(self, body, struct):
        text = body.decode("utf-8", "replace")
        start = len(text) - len(text.lstrip(" \t\r\n"))
        if start == len(text):
            raise DecodeError("EOF")
        try:
            # json.Decoder.Decode reads one value: trailing data is never looked at
            value, _ = json.JSONDecoder(object_pairs_hook=_Pairs, parse_float=_Number,
                                        parse_constant=self._reject_constant).raw_decode(text, start)
        except json.JSONDecodeError as exc:
            raise DecodeError(self._syntax_error(text, exc))
        except _ConstantError as exc:
            raise DecodeError("invalid character %s looking for beginning of value" % _go_char(str(exc)[0]))
        if not isinstance(value, _Pairs):
            if value is None:
                return {}
            raise DecodeError("json: cannot unmarshal %s into Go value of type %s"
                              % (self._json_kind(value), struct.go_type))
        return self._struct(value, struct, _struct_name(struct), [])

    @staticmethod
    def _reject_constant(name):
        raise _ConstantError(name)

    def _struct(self, pairs, struct, root, path):
        out = {}
        for key, value in pairs:
            name = struct.keys.get(key.lower())
            if name is None:
                if struct.lenient:
                    continue
                raise DecodeError("json: unknown field " + json.dumps(key, ensure_ascii=False))
            converted = self._value(value, struct.fields[name], root, path + [name])
            if converted is not None:
                out[name] = converted
            else:
                out.pop(name, None)
        return out

    def _value(self, value, kind, root, path):
        if value is None:
            return None
        if kind is ANY:
            return self._plain(value)
        if kind is DURATION:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                self._type_error(value, kind, root, path)
            if isinstance(value, str):
                try:
                    return GoDuration.parse(value)
                except ValueError as exc:
                    raise DecodeError(str(exc))
            return int(value)  # a JSON number is nanoseconds
        if kind is STRING:
            if not isinstance(value, str):
                self._type_error(value, kind, root, path)
            return value
        if kind is BOOL:
            if not isinstance(value, bool):
                self._type_error(value, kind, root, path)
            return value
        if kind is INT:
            if isinstance(value, bool) or not isinstance(value, int):
                self._type_error(value, kind, root, path)
            return value
        if isinstance(kind, Struct):
            if not isinstance(value, _Pairs):
                self._type_error(value, kind, root, path)
            return self._struct(value, kind, root, path)
        if isinstance(kind, ListOf):
            if not isinstance(value, list) or isinstance(value, _Pairs):
                self._type_error(value, kind, root, path)
            return [self._zero(kind.item) if item is None else self._value(item, kind.item, root, path)
                    for item in value]
        if isinstance(kind, MapOf):
            if not isinstance(value, _Pairs):
                self._type_error(value, kind, root, path)
            out = {}
            for key, item in value:
                out[key] = self._zero(kind.value) if item is None else self._value(item, kind.value, root, path)
            return out
        raise AssertionError(kind)

    @staticmethod
    def _zero(kind):
        return {STRING: "", INT: 0, BOOL: False, DURATION: 0}.get(kind, {} if isinstance(kind, Struct) else None)

    def _plain(self, value):
        if isinstance(value, _Pairs):
            return {key: self._plain(item) for key, item in value}
        if isinstance(value, list):
            return [self._plain(item) for item in value]
        if isinstance(value, _Number):
            return float(value)
        return value

    def _type_error(self, value, kind, root, path):
        raise DecodeError("json: cannot unmarshal %s into Go struct field %s of type %s"
                          % (self._json_kind(value), ".".join([root] + path), kind.go_type))

    @staticmethod
    def _json_kind(value):
        if isinstance(value, bool):
            return "bool"
        if isinstance(value, _Number):
            return "number " + value.literal
        if isinstance(value, int):
            return "number " + str(value)
        if isinstance(value, str):
            return "string"
        if isinstance(value, _Pairs):
            return "object"
        return "array"

    @staticmethod
    def _syntax_error(text, exc):
        pos = exc.pos
        if pos >= len(text) or exc.msg.startswith("Unterminated string"):
            return "unexpected EOF"
        char = _go_char(text[pos])
        if exc.msg.startswith("Invalid control character"):
            return "invalid character %s in string literal" % char
        if exc.msg.startswith("Expecting property name"):
            return "invalid character %s looking for beginning of object key string" % char
        if exc.msg.startswith("Expecting ':'"):
            return "invalid character %s after object key" % char
        if exc.msg.startswith("Expecting ','"):
            return "invalid character %s after %s" % (char, GoJSONDecoder._container(text, pos))
        if exc.msg.startswith("Invalid \\escape"):
            return "invalid character %s in string escape code" % _go_char(text[pos + 1:pos + 2] or " ")
        return "invalid character %s looking for beginning of value" % char

    @staticmethod
    def _container(text, pos):
        in_string, escaped, stack = False, False, []
        for char in text[:pos]:
            if in_string:
                escaped = char == "\\" and not escaped
                if char == '"' and not escaped:
                    in_string = False
                continue
            if char == '"':
                in_string = True
            elif char in "[{":
                stack.append(char)
            elif char in "]}" and stack:
                stack.pop()
        return "array element" if stack and stack[-1] == "[" else "object key:value pair"


class _ConstantError(Exception):
    pass


def _go_char(char):
    if char == "'":
        return "'\\''"
    if char == '"':
        return "'\"'"
    if char.isprintable():
        return "'%s'" % char
    return "'%s'" % json.dumps(char)[1:-1]


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


# --------------------------------------------------------------------------------------------------------------
# Go-style JSON encoding


def go_json(value, pretty=False):
    """json.Marshal (HTML-escaped, compact) or MarshalIndent with 4 spaces and a trailing newline."""
    if pretty:
        text = json.dumps(value, ensure_ascii=False, indent=4, separators=(",", ": ")) + "\n"
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text.encode("utf-8")


def _sorted_map(value):
    """Go marshals map keys in sorted order."""
    if isinstance(value, dict):
        return {key: _sorted_map(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_map(item) for item in value]
    return value


def _omit_empty(mapping, names):
    return {name: mapping[name] for name in names if mapping.get(name) not in (None, "", 0, False, [], {})}


# --------------------------------------------------------------------------------------------------------------
# ACLs


class Principal:
    def __init__(self, accessor, rules):
        self.accessor = accessor
        self.rules = rules


class AclPolicy:
    """Token resolution and the permission checks of a Consul agent with (or without) ACLs."""

    def __init__(self, default_policy=None, tokens=None):
        if default_policy not in (None, "allow", "deny"):
            raise ValueError("acl_default_policy must be None, 'allow' or 'deny'")
        self.default_policy = default_policy
        self.tokens = dict(tokens or {})

    @property
    def enabled(self):
        return self.default_policy is not None

    @property
    def header_value(self):
        return self.default_policy or "allow"

    def resolve(self, secret):
        """The principal for a token secret; None means ACLs are off (everything allowed)."""
        if not self.enabled:
            return None
        if not secret or secret == "anonymous":
            return Principal(ANONYMOUS_ACCESSOR, {})
        rules = self.tokens.get(secret)
        if rules is None:
            raise HTTPError(403, "ACL not found")
        return Principal(rules.get("accessor") or str(uuid.uuid5(uuid.NAMESPACE_OID, secret)), rules)

    def allowed(self, principal, resource, access, name=None):
        if principal is None or self.default_policy == "allow":
            return True
        rules = principal.rules
        if resource == "service":
            names = list(rules.get("service_write") or [])
            if access == "read":
                names += list(rules.get("service_read") or [])
            return any(self._matches(pattern, name) for pattern in names)
        if resource == "node":
            return bool(rules.get("node_write")) or (access == "read" and bool(rules.get("node_read")))
        if resource == "agent":
            return bool(rules.get("agent_write")) or (access == "read" and bool(rules.get("agent_read")))
        return False

    @staticmethod
    def _matches(pattern, name):
        if pattern == "*":
            return True
        if pattern.endswith("*"):
            return (name or "").startswith(pattern[:-1])
        return pattern == name

    def require(self, principal, resource, access, name=None):
        if not self.allowed(principal, resource, access, name):
            on = "" if name is None else " on %s" % json.dumps(name, ensure_ascii=False)
            raise HTTPError(403, "Permission denied: token with AccessorID '%s' lacks permission '%s:%s'%s"
                            % (principal.accessor, resource, access, on))


# --------------------------------------------------------------------------------------------------------------
# Validation of decoded definitions (the agent endpoint's checks, in Consul's order)


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


class CheckType:
    """Classification and validation of one decoded check definition (structs.CheckType)."""

    INTERVAL_TYPES = ("ScriptArgs", "HTTP", "TCP", "UDP", "GRPC", "H2PING", "OSService")

    def __init__(self, fields):
        self.fields = fields

    def get(self, name, default=None):
        return self.fields.get(name, default)

    @property
    def interval_check(self):
        return any(self.fields.get(name) for name in self.INTERVAL_TYPES)

    @property
    def alias(self):
        return bool(self.get("AliasService") or self.get("AliasNode"))

    def validate(self):
        interval, ttl = self.get("Interval", 0), self.get("TTL", 0)
        if interval > 0 and ttl > 0:
            return "Interval and TTL cannot both be specified"
        if self.interval_check and interval <= 0:
            return "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"
        if self.alias:
            if ttl > 0:
                return "TTL must be not be set for Alias checks"
            if interval > 0:
                return "Interval cannot be set for Alias checks"
        elif not self.interval_check and ttl <= 0:
            return "TTL must be > 0 for TTL checks"
        if self.get("OutputMaxSize", 0) < 0:
            return "MaxOutputMaxSize must be positive"
        if self.get("FailuresBeforeWarning", 0) > self.get("FailuresBeforeCritical", 0):
            return "FailuresBeforeWarning can't be higher than FailuresBeforeCritical"
        return None

    @property
    def type(self):
        interval = self.get("Interval", 0) > 0
        if self.get("GRPC") and interval:
            return "grpc"
        if self.get("HTTP") and interval:
            return "http"
        if self.get("TTL", 0) > 0:
            return "ttl"
        if self.get("TCP") and interval:
            return "tcp"
        if self.get("UDP") and interval:
            return "udp"
        if self.alias:
            return "alias"
        if self.get("DockerContainerID") and self.get("ScriptArgs") and interval:
            return "docker"
        if self.get("ScriptArgs") and interval:
            return "script"
        if self.get("H2PING") and interval:
            return "h2ping"
        if self.get("OSService") and interval:
            return "os_service"
        return ""


def check_types(definition, prefix):
    """ServiceDefinition.CheckTypes() and the status check after it; raises the 400."""
    raw = []
    if definition.get("Check"):
        raw.append(definition["Check"])
    raw.extend(definition.get("Checks") or [])
    checks = [CheckType(fields) for fields in raw]
    for check in checks:
        problem = check.validate()
        if problem:
            raise bad_request(prefix + problem)
    for check in checks:
        if check.get("Status") and check.get("Status") not in CHECK_STATUSES:
            raise bad_request("Status for checks must 'passing', 'warning', 'critical'")
    return checks


# --------------------------------------------------------------------------------------------------------------
# The agent's local state: services, checks and the runners that keep checks up to date


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


class LocalCheck:
    def __init__(self, check_id, name, check_type, status, service=None, notes="", output=""):
        self.id = check_id
        self.name = name
        self.check_type = check_type  # CheckType, or None for maintenance checks
        self.status = status
        self.output = output
        self.notes = notes
        self.service_id = service.id if service else ""
        self.service_name = service.name if service else ""
        self.service_tags = list(service.view["Tags"]) if service else []
        self.type = check_type.type if check_type else "maintenance"
        self.runner = None
        self.last_ttl_output = ""
        self.critical_since = time.monotonic() if status == CRITICAL else None

    @property
    def is_ttl(self):
        return self.type == "ttl"

    def view(self, node):
        fields = self.check_type.fields if self.check_type else {}
        return {"Node": node, "CheckID": self.id, "Name": self.name, "Status": self.status, "Notes": self.notes,
                "Output": self.output, "ServiceID": self.service_id, "ServiceName": self.service_name,
                "ServiceTags": list(self.service_tags), "Type": self.type,
                "Interval": GoDuration.format(fields.get("Interval", 0)) if self.check_type else "",
                "Timeout": GoDuration.format(fields.get("Timeout", 0)) if self.check_type else "",
                "ExposedPort": 0, "Definition": {}, "CreateIndex": 0, "ModifyIndex": 0}

    def health_view(self, node):
        # the health endpoint converts to api.HealthCheck: Type and Definition are not filled in
        return {"Node": node, "CheckID": self.id, "Name": self.name, "Status": self.status, "Notes": self.notes,
                "Output": self.output, "ServiceID": self.service_id, "ServiceName": self.service_name,
                "ServiceTags": list(self.service_tags), "Type": "", "ExposedPort": 0,
                "Definition": {"Interval": "0s", "Timeout": "0s", "DeregisterCriticalServiceAfter": "0s",
                               "HTTP": "", "Header": None, "Method": "", "Body": "", "TLSServerName": "",
                               "TLSSkipVerify": False, "TCP": "", "TCPUseTLS": False, "UDP": "", "GRPC": "",
                               "OSService": "", "GRPCUseTLS": False},
                "CreateIndex": 0, "ModifyIndex": 0}


def truncate_output(output):
    data = output.encode("utf-8")
    if len(data) <= OUTPUT_MAX_SIZE:
        return output
    return "%s ... (captured %d of %d bytes)" % (data[:OUTPUT_MAX_SIZE].decode("utf-8", "ignore"),
                                                OUTPUT_MAX_SIZE, len(data))


class TtlTimer:
    """Marks a TTL check critical when no update came within its TTL (no re-arm)."""

    def __init__(self, state, check_id, ttl_seconds):
        self._timer = threading.Timer(ttl_seconds, state.expire_ttl, args=(check_id, self))
        self._timer.daemon = True
        self._timer.start()

    def stop(self):
        self._timer.cancel()


class Prober:
    """Runs a probe every interval after a random stagger of at most one interval."""

    def __init__(self, state, check_id, probe, interval_seconds):
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(state, check_id, probe, interval_seconds),
                                        name="consul-double-probe-" + check_id, daemon=True)
        self._thread.start()

    def _run(self, state, check_id, probe, interval):
        delay = random.uniform(0, interval)
        while not self._stopped.wait(delay):
            status, output = probe()
            if self._stopped.is_set():
                return
            state.set_probe_result(check_id, self, status, output)
            delay = interval

    def stop(self):
        self._stopped.set()


def _split_host_port(target):
    host, _, port = target.rpartition(":")
    return host.strip("[]"), port


def tcp_probe(target, timeout):
    def probe():
        host, port = _split_host_port(target)
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                return PASSING, "TCP connect %s: Success" % target
        except socket.timeout:
            return CRITICAL, "dial tcp %s: i/o timeout" % target
        except socket.gaierror:
            return CRITICAL, "dial tcp: lookup %s: no such host" % host
        except (OSError, ValueError) as exc:
            reason = (getattr(exc, "strerror", None) or str(exc)).lower()
            return CRITICAL, "dial tcp %s: connect: %s" % (target, reason)
    return probe


def http_probe(check, timeout):
    url, method = check.get("HTTP"), check.get("Method") or "GET"
    headers = {key: values[0] for key, values in (check.get("Header") or {}).items() if values}
    body = (check.get("Body") or "").encode() or None

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy from the environment

    def probe():
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with opener.open(request, timeout=timeout) as response:
                code, reason, text = response.status, response.reason, response.read(OUTPUT_MAX_SIZE)
        except urllib.error.HTTPError as exc:
            code, reason, text = exc.code, exc.reason, exc.read(OUTPUT_MAX_SIZE)
        except Exception as exc:  # connection errors of every kind
            return CRITICAL, '%s "%s": %s' % (method.capitalize(), url, getattr(exc, "reason", exc))
        output = "HTTP %s %s: %d %s Output: %s" % (method, url, code, reason, text.decode("utf-8", "replace"))
        if 200 <= code < 300:
            return PASSING, output
        return (WARNING if code == 429 else CRITICAL), output
    return probe


class AgentState:
    """Services and checks of the local agent. Every method is atomic under one lock."""

    def __init__(self, node_name, datacenter, sidecar_port_range):
        self.node_name = node_name
        self.datacenter = datacenter
        self.sidecar_port_range = sidecar_port_range
        self.changed = threading.Condition(threading.RLock())
        self.services = {}
        self.checks = {}

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
            self.services[service.id] = service
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
                for check in list(self.checks.values()):
                    if check.service_id == service.id and check.id not in wanted:
                        self._drop_check(check.id)
            self._changed()
            return service

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
            for check in list(self.checks.values()):
                if check.service_id == service_id:
                    self._drop_check(check.id)
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
        used = {service.view["Port"] for service in self.services.values()}
        for port in range(low, high + 1):
            if port not in used:
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
            self._stop_runner(old)
        self.checks[check.id] = check
        self._start_runner(check)

    def _start_runner(self, check):
        fields = check.check_type.fields if check.check_type else {}
        interval = max(fields.get("Interval", 0), SECOND) / SECOND
        timeout = (fields.get("Timeout", 0) or 10 * SECOND) / SECOND
        if check.type == "ttl":
            check.runner = TtlTimer(self, check.id, fields["TTL"] / SECOND)
        elif check.type == "tcp":
            check.runner = Prober(self, check.id, tcp_probe(fields["TCP"], timeout), interval)
        elif check.type == "http":
            check.runner = Prober(self, check.id, http_probe(check.check_type, timeout), interval)

    @staticmethod
    def _stop_runner(check):
        if check.runner is not None:
            check.runner.stop()
            check.runner = None

    def _drop_check(self, check_id):
        check = self.checks.pop(check_id, None)
        if check is not None:
            self._stop_runner(check)

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

    @staticmethod
    def _set_status(check, status, output):
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
                self.checks[check_id] = LocalCheck(check_id, "Service Maintenance Mode", None, CRITICAL,
                                                   self.services[service_id],
                                                   notes=reason or DEFAULT_MAINTENANCE_REASON)
                self._changed()

    def disable_maintenance(self, service_id):
        self.remove_check(MAINTENANCE_CHECK_PREFIX + service_id)

    # -- reading --------------------------------------------------------------------------------------------

    def checks_of(self, service_id):
        """The checks that make a service's health: its own plus every node-level check."""
        with self.lock:
            return [check for check in self.checks.values() if check.service_id in (service_id, "")]

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
            self._changed()

    def reap_critical(self):
        """DeregisterCriticalServiceAfter: drop services whose check has been critical too long."""
        now = time.monotonic()
        with self.lock:
            for check in list(self.checks.values()):
                limit = check.check_type.get("DeregisterCriticalServiceAfter", 0) if check.check_type else 0
                if (limit and check.critical_since is not None and check.service_id in self.services
                        and now - check.critical_since >= max(limit, 60 * SECOND) / SECOND):
                    self.remove_service(check.service_id)

    # -- alias checks ---------------------------------------------------------------------------------------

    def _changed(self):
        self._refresh_aliases()
        self.changed.notify_all()

    def _refresh_aliases(self):
        # checks indexed by service once per refresh, not scanned per alias check:
        # with N services a full scan per alias made every TTL update O(N^2)
        by_service = {}
        for check in self.checks.values():
            by_service.setdefault(check.service_id, []).append(check)
        aliases = [check for check in self.checks.values() if check.type == "alias"]
        for _ in range(5):  # aliases of aliases settle in a few rounds
            moved = False
            for check in aliases:
                status, output = self._alias_result(check.check_type, by_service)
                if (check.status, check.output) != (status, output):
                    self._set_status(check, status, output)
                    moved = True
            if not moved:
                return

    def _alias_result(self, check_type, by_service):
        node, service_id = check_type.get("AliasNode", ""), check_type.get("AliasService", "")
        if node and node != self.node_name:
            return CRITICAL, "Node %s could not be found" % node  # remote aliases are not supported
        status, output = PASSING, "No checks found."
        # the service's checks and the node-level ones (service_id ""), in check-id order
        candidates = by_service.get("", []) + (by_service.get(service_id, []) if service_id else [])
        for check in sorted(candidates, key=lambda c: c.id):
            if check.status in (CRITICAL, WARNING):
                status, output = check.status, 'Aliased check "%s" failing: %s' % (check.name, check.output)
                if check.status == CRITICAL:
                    break
            elif status == PASSING:
                output = "All checks passing."
        if service_id and service_id not in self.services:
            return CRITICAL, "Service %s could not be found on node %s" % (service_id, node)
        return status, output


# --------------------------------------------------------------------------------------------------------------
# Building stored services from definitions


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
        view["Meta"] = _sorted_map(d.get("Meta") or {})
        view["Port"] = d.get("Port", 0)
        view["Address"] = d.get("Address", "")
        if d.get("SocketPath"):
            view["SocketPath"] = d["SocketPath"]
        tagged = {name: {"Address": entry.get("Address", ""), "Port": entry.get("Port", 0)}
                  for name, entry in (d.get("TaggedAddresses") or {}).items()}
        self._default_tagged_addresses(tagged, view["Address"], view["Port"])
        if tagged:
            view["TaggedAddresses"] = _sorted_map(tagged)
        weights = d.get("Weights")
        view["Weights"] = ({"Passing": 1, "Warning": 1} if weights is None else
                           {"Passing": weights.get("Passing", 0), "Warning": weights.get("Warning", 0)})
        view["EnableTagOverride"] = d.get("EnableTagOverride", False)
        if d.get("Kind") in PROXY_KINDS:
            view["Proxy"] = self._proxy_view(d.get("Proxy") or {})
        if (d.get("Connect") or {}).get("Native"):
            view["Connect"] = {"Native": True}
        view["Datacenter"] = self.datacenter
        locality = _omit_empty(d.get("Locality") or {}, ("Region", "Zone"))
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
        view = _omit_empty(proxy, ("EnvoyExtensions",))
        view["DestinationServiceName"] = proxy.get("DestinationServiceName", "")
        view.update(_omit_empty(proxy, ("DestinationServiceID", "LocalServiceAddress", "LocalServicePort",
                                        "LocalServiceSocketPath", "Mode")))
        transparent = _omit_empty(proxy.get("TransparentProxy") or {}, ("OutboundListenerPort", "DialedDirectly"))
        if transparent:
            view["TransparentProxy"] = transparent
        if proxy.get("Config"):
            view["Config"] = _sorted_map(proxy["Config"])
        upstreams = [self._upstream_view(upstream) for upstream in proxy.get("Upstreams") or []]
        if upstreams:
            view["Upstreams"] = upstreams
        view["MeshGateway"] = _omit_empty(proxy.get("MeshGateway") or {}, ("Mode",))
        expose = proxy.get("Expose") or {}
        view["Expose"] = _omit_empty(dict(expose, Paths=[
            dict(_omit_empty(path, ("ListenerPort", "Path", "LocalPathPort", "Protocol")), ParsedFromCheck=False)
            for path in expose.get("Paths") or []]), ("Checks", "Paths"))
        access_logs = _omit_empty(proxy.get("AccessLogs") or {}, ("Enabled", "DisableListenerLogs", "Type",
                                                                  "Path", "JSONFormat", "TextFormat"))
        if access_logs:
            view["AccessLogs"] = access_logs
        return view

    @staticmethod
    def _upstream_view(upstream):
        view = {"DestinationType": upstream.get("DestinationType") or "service"}
        view.update(_omit_empty(upstream, ("DestinationPartition", "DestinationNamespace", "DestinationPeer")))
        view["DestinationName"] = upstream.get("DestinationName", "")
        view.update(_omit_empty(upstream, ("Datacenter", "LocalBindAddress", "LocalBindPort",
                                           "LocalBindSocketPath", "LocalBindSocketMode")))
        if upstream.get("Config"):
            view["Config"] = _sorted_map(upstream["Config"])
        view["MeshGateway"] = _omit_empty(upstream.get("MeshGateway") or {}, ("Mode",))
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


# --------------------------------------------------------------------------------------------------------------
# go-bexpr filters (?filter=)


class FilterError(Exception):
    pass


class Filter:
    """A go-bexpr boolean expression evaluated over the JSON views (Go field names as selectors)."""

    _TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)|(?P<num>-?[0-9]+(?:\.[0-9]+)?)'
                        r'|(?P<op>==|!=|\(|\))|(?P<word>[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*))')

    def __init__(self, expression):
        self.expression = expression
        self.tokens = self._tokenize(expression)
        self.pos = 0
        self.tree = self._or()
        if self.pos < len(self.tokens):
            self._fail()

    def _tokenize(self, text):
        tokens, offset = [], 0
        while offset < len(text):
            if not text[offset:].strip():
                break
            match = self._TOKEN.match(text, offset)
            if not match or match.end() == offset:
                start = len(text) - len(text[offset:].lstrip())
                tokens.append(("bad", text[start:], start))
                break
            kind = match.lastgroup
            tokens.append((kind, match.group(kind), match.start(kind)))
            offset = match.end()
        return tokens

    def _peek(self, *words):
        if self.pos < len(self.tokens):
            kind, value, _ = self.tokens[self.pos]
            if not words or (kind in ("word", "op") and value in words):
                return self.tokens[self.pos]
        return None

    def _take(self, *words):
        token = self._peek(*words)
        if token is not None:
            self.pos += 1
        return token

    def _fail(self):
        offset = self.tokens[self.pos][2] if self.pos < len(self.tokens) else len(self.expression)
        line = self.expression.count("\n", 0, offset) + 1
        column = offset - (self.expression.rfind("\n", 0, offset) + 1) + 1
        raise FilterError('%d:%d (%d): no match found, expected: "!=", ".", "==", "[", [ \\t\\r\\n] or [a-zA-Z0-9_/]'
                          % (line, column, offset))

    def _or(self):
        node = self._and()
        while self._take("or"):
            node = ("or", node, self._and())
        return node

    def _and(self):
        node = self._not()
        while self._take("and"):
            node = ("and", node, self._not())
        return node

    def _not(self):
        if self._take("not"):
            return ("not", self._not())
        if self._take("("):
            node = self._or()
            if not self._take(")"):
                self._fail()
            return node
        return self._match()

    def _match(self):
        first = self._take()
        if first is None or first[0] not in ("word", "str", "num"):
            self.pos -= first is not None
            self._fail()
        if first[0] != "word" or self._peek("in", "not"):
            # value [not] in selector
            negate = bool(self._take("not"))
            if not self._take("in"):
                self._fail()
            selector = self._take()
            if selector is None or selector[0] != "word":
                self._fail()
            node = ("in", self._literal(first), selector[1])
            return ("not", node) if negate else node
        selector = first[1]
        if self._take("is"):
            negate = bool(self._take("not"))
            if not self._take("empty"):
                self._fail()
            node = ("empty", selector)
            return ("not", node) if negate else node
        negate = False
        if self._take("not"):
            negate = True
        operator = self._take("==", "!=", "contains", "matches")
        if operator is None or (negate and operator[1] in ("==", "!=")):
            self._fail()
        value = self._take()
        if value is None or value[0] not in ("word", "str", "num"):
            self.pos -= value is not None
            self._fail()
        node = (operator[1], selector, self._literal(value))
        return ("not", node) if negate else node

    @staticmethod
    def _literal(token):
        kind, value, _ = token
        if kind == "str":
            return json.loads(value) if value.startswith('"') else value[1:-1]
        return value

    def matches(self, view):
        return self._eval(self.tree, view)

    def _eval(self, node, view):
        op = node[0]
        if op == "or":
            return self._eval(node[1], view) or self._eval(node[2], view)
        if op == "and":
            return self._eval(node[1], view) and self._eval(node[2], view)
        if op == "not":
            return not self._eval(node[1], view)
        if op == "in":
            return self._contains(self._select(view, node[2]), node[1])
        if op == "empty":
            value = self._select(view, node[1])
            return value is _MISSING or not value
        value = self._select(view, node[1])
        if op == "contains":
            return self._contains(value, node[2])
        if op == "matches":
            return isinstance(value, str) and re.search(node[2], value) is not None
        equal = value is not _MISSING and self._equal(value, node[2])
        return equal if op == "==" else not equal

    @staticmethod
    def _select(view, selector):
        value = view
        for part in selector.split("."):
            if isinstance(value, list):
                value = [item.get(part, _MISSING) for item in value if isinstance(item, dict)]
            elif isinstance(value, dict) and part in value:
                value = value[part]
            else:
                return _MISSING
        return value

    @staticmethod
    def _equal(value, literal):
        if isinstance(value, bool):
            return literal in ("true", "false") and value == (literal == "true")
        if isinstance(value, (int, float)):
            try:
                return value == float(literal)
            except ValueError:
                return False
        return isinstance(value, str) and value == literal

    @classmethod
    def _contains(cls, value, literal):
        if isinstance(value, dict):
            return literal in value
        if isinstance(value, list):
            return any(item is not _MISSING and cls._equal(item, literal) for item in value)
        if isinstance(value, str):
            return literal in value
        return False


_MISSING = object()


# --------------------------------------------------------------------------------------------------------------
# The HTTP API: one method per endpoint


class Request:
    def __init__(self, method, path, params, headers, body):
        self.method = method
        self.path = path
        self.params = params  # every value of every query parameter
        self.query = {key: values[0] for key, values in params.items()}
        self.headers = headers
        self.body = body

    def has(self, name):
        return name in self.params

    @property
    def token(self):
        if self.query.get("token"):
            return self.query["token"]
        if self.headers.get("X-Consul-Token"):
            return self.headers.get("X-Consul-Token")
        words = (self.headers.get("Authorization") or "").split()
        if len(words) >= 2 and words[0].lower() == "bearer":
            return words[1]
        return ""


class Response:
    def __init__(self, status=200, body=b"", content_type=None, headers=None):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = dict(headers or {})


def json_response(request, value, status=200, headers=None):
    return Response(status, go_json(value, pretty=request.has("pretty")), "application/json", headers)


class AgentAPI:
    """The /v1/agent endpoints over an AgentState, with Consul's validation and ACL order."""

    def __init__(self, state, acl, builder, http_port, serving):
        self.serving = serving  # False once the agent is stopped: blocking queries give up
        self.state = state
        self.acl = acl
        self.builder = builder
        self.decoder = GoJSONDecoder()
        self.http_port = http_port
        self.node_id = str(uuid.uuid4())

    def routes(self):
        """(path, method, handler); a path ending in "/" is a prefix whose tail is the handler's argument."""
        return [
            ("/v1/agent/self", "GET", self.agent_self),
            ("/v1/agent/services", "GET", self.services),
            ("/v1/agent/service/", "GET", self.service),
            ("/v1/agent/service/register", "PUT", self.register_service),
            ("/v1/agent/service/deregister/", "PUT", self.deregister_service),
            ("/v1/agent/service/maintenance/", "PUT", self.service_maintenance),
            ("/v1/agent/checks", "GET", self.checks),
            ("/v1/agent/check/register", "PUT", self.register_check),
            ("/v1/agent/check/deregister/", "PUT", self.deregister_check),
            ("/v1/agent/check/pass/", "PUT", lambda r, i: self.ttl_status(r, i, PASSING)),
            ("/v1/agent/check/warn/", "PUT", lambda r, i: self.ttl_status(r, i, WARNING)),
            ("/v1/agent/check/fail/", "PUT", lambda r, i: self.ttl_status(r, i, CRITICAL)),
            ("/v1/agent/check/update/", "PUT", self.update_check),
            ("/v1/agent/health/service/id/", "GET", self.health_by_id),
            ("/v1/agent/health/service/name/", "GET", self.health_by_name),
        ]

    def _decode(self, request, struct):
        try:
            return self.decoder.decode(request.body, struct)
        except DecodeError as exc:
            raise bad_request("Request decode failed: %s" % exc)

    # -- services -------------------------------------------------------------------------------------------

    def register_service(self, request):
        definition = self._decode(request, SERVICE_DEFINITION)
        principal = self._validate_service(request, definition)
        checks = check_types(definition, "Invalid check: ")
        nested = (definition.get("Connect") or {}).get("SidecarService")
        sidecar_checks = None if nested is None else check_types(nested, "Invalid check in sidecar_service: ")
        self._require_service_write(principal, definition)
        sidecar = None if nested is None else self._sidecar(request, definition, nested)

        flag = request.query.get("replace-existing-checks")
        replace = flag in ("", "true")  # present, and empty or exactly "true"
        token = definition.get("Token") or request.token
        view = self.builder.view(definition)
        with self.state.lock:
            self.state.add_service(view, checks, token, replace)
            if sidecar is not None:
                # a failure from here on leaves the parent registered, as Consul does
                if not sidecar["Port"]:
                    sidecar["Port"] = self.state.sidecar_port(sidecar["ID"])
                sidecar_view = self.builder.view(sidecar)
                if not sidecar_checks:
                    sidecar_checks = self.builder.default_sidecar_checks(sidecar_view, view["ID"])
                self.state.add_service(sidecar_view, sidecar_checks, nested.get("Token") or token, replace,
                                       sidecar_of=view["ID"])
        return Response()

    def _validate_service(self, request, definition):
        """Steps 2-7 of the registration order; returns the caller's principal."""
        if not definition.get("Name"):
            raise bad_request("Missing service name")
        if definition.get("Address") in ("0.0.0.0", "::", "[::]"):
            raise bad_request("Invalid service address")
        principal = self.acl.resolve(request.token)
        problem = validate_weights(definition.get("Weights"))
        if problem:
            raise bad_request(problem)
        problem = validate_meta(definition.get("Meta") or {})
        if problem:
            raise bad_request("Invalid Service Meta: " + problem)
        errors = validate_node_service(definition)
        if errors:
            raise bad_request("Validation failed: " + multierror(errors))
        return principal

    def _sidecar(self, request, definition, nested):
        """The expanded sidecar definition, validated and authorised (its own Token if it has one)."""
        sidecar = self.builder.sidecar_definition(definition, nested)
        problem = validate_meta(sidecar.get("Meta") or {})
        if problem:
            raise bad_request("Invalid SidecarService: " + problem)
        errors = validate_node_service(sidecar, port_will_be_assigned=not sidecar["Port"])
        if errors:
            raise bad_request("Failed Validation: " + multierror(errors))
        self._require_service_write(self.acl.resolve(nested.get("Token") or request.token), sidecar)
        return sidecar

    def _require_service_write(self, principal, definition):
        self.acl.require(principal, "service", "write", definition["Name"])
        if definition.get("Kind") == "connect-proxy":
            destination = (definition.get("Proxy") or {}).get("DestinationServiceName", "")
            self.acl.require(principal, "service", "write", destination)

    def deregister_service(self, request, service_id):
        principal = self.acl.resolve(request.token)
        service = self.state.services.get(service_id)
        if service is None:
            raise HTTPError(404, 'Unknown service ID "%s". Ensure that the service ID is passed, '
                                 'not the service name.' % service_id)
        self.acl.require(principal, "service", "write", service.name)
        self.state.remove_service(service_id)
        return Response()

    def service_maintenance(self, request, service_id):
        if not service_id:
            raise bad_request("Missing service ID")
        if not request.has("enable"):
            raise bad_request("Missing value for enable")
        enable = _go_parse_bool(request.query["enable"])
        if enable is None:
            raise bad_request("Invalid value for enable: %s" % json.dumps(request.query["enable"]))
        principal = self.acl.resolve(request.token)
        service = self.state.services.get(service_id)
        if service is None:
            raise HTTPError(404, 'Unknown service ID "%s"' % service_id)
        self.acl.require(principal, "service", "write", service.name)
        if enable:
            self.state.enable_maintenance(service_id, request.query.get("reason", ""))
        else:
            self.state.disable_maintenance(service_id)
        return Response()

    def services(self, request):
        principal = self.acl.resolve(request.token)
        condition = self._filter(request)
        with self.state.lock:
            views = [service.view for service in self.state.services.values()]
        readable = [view for view in views if self.acl.allowed(principal, "service", "read", view["Service"])]
        headers = self._filtered_header(request, len(readable) != len(views))
        result = {view["ID"]: view for view in readable if condition is None or condition.matches(view)}
        return json_response(request, _sorted_keys(result), headers=headers)

    def service(self, request, service_id):
        principal = self.acl.resolve(request.token)
        wait = self._wait(request)
        service = self.state.services.get(service_id)
        if service is None:
            raise HTTPError(404, "unknown service ID: " + service_id)
        self.acl.require(principal, "service", "read", service.name)
        if request.query.get("hash"):
            self.state.wait_for_change(service_id, request.query["hash"], time.monotonic() + wait, self.serving)
            service = self.state.services.get(service_id, service)
        content_hash = service.content_hash()
        return json_response(request, with_content_hash(service.view, content_hash),
                             headers={"X-Consul-ContentHash": content_hash})

    @staticmethod
    def _wait(request):
        if not request.query.get("wait"):
            return 300.0
        try:
            wait = GoDuration.parse(request.query["wait"]) / SECOND
        except ValueError:
            raise bad_request("Invalid wait time")
        return min(wait, 600.0)

    def _filter(self, request):
        if not request.query.get("filter"):
            return None
        try:
            return Filter(request.query["filter"])
        except FilterError as exc:
            raise HTTPError(500, "Failed to create boolean expression evaluator: %s" % exc)

    def _filtered_header(self, request, dropped):
        if dropped and request.token and self.acl.enabled:
            return {"X-Consul-Results-Filtered-By-ACLs": "true"}
        return {}

    # -- checks ---------------------------------------------------------------------------------------------

    def checks(self, request):
        principal = self.acl.resolve(request.token)
        condition = self._filter(request)
        with self.state.lock:
            checks = list(self.state.checks.values())
            views = [check.view(self.state.node_name) for check in checks]
        readable = [view for check, view in zip(checks, views) if self._can_read_check(principal, check)]
        headers = self._filtered_header(request, len(readable) != len(views))
        result = {view["CheckID"]: view for view in readable if condition is None or condition.matches(view)}
        return json_response(request, _sorted_keys(result), headers=headers)

    def _can_read_check(self, principal, check):
        if check.service_id:
            return self.acl.allowed(principal, "service", "read", check.service_name)
        return self.acl.allowed(principal, "node", "read", self.state.node_name)

    def _require_check_write(self, principal, check):
        if check.service_id:
            self.acl.require(principal, "service", "write", check.service_name)
        else:
            self.acl.require(principal, "node", "write", self.state.node_name)

    def register_check(self, request):
        definition = self._decode(request, CHECK_DEFINITION)
        if not definition.get("Name"):
            raise bad_request("Missing check name")
        status = definition.get("Status", "")
        if status and status not in CHECK_STATUSES:
            raise bad_request("Bad check status")
        principal = self.acl.resolve(request.token)
        check_type = CheckType(definition)
        problem = check_type.validate()
        if problem:
            raise bad_request("Invalid check: " + problem)
        service_id = definition.get("ServiceID", "")
        service = self.state.services.get(service_id) if service_id else None
        if service_id and service is None:
            raise HTTPError(404, 'ServiceID "%s" does not exist' % service_id)
        if service is not None:
            self.acl.require(principal, "service", "write", service.name)
        else:
            self.acl.require(principal, "node", "write", self.state.node_name)
        self.state.add_check(definition.get("ID") or definition["Name"], definition["Name"], check_type,
                             status or CRITICAL, service, definition.get("Notes", ""))
        return Response()

    def deregister_check(self, request, check_id):
        principal = self.acl.resolve(request.token)
        check = self._known_check(check_id)
        self._require_check_write(principal, check)
        self.state.remove_check(check_id)
        return Response()

    def _known_check(self, check_id):
        check = self.state.checks.get(check_id)
        if check is None:
            raise HTTPError(404, 'Unknown check ID "%s". Ensure that the check ID is passed, '
                                 'not the check name.' % check_id)
        return check

    def ttl_status(self, request, check_id, status):
        return self._set_ttl(request, check_id, status, request.query.get("note", ""))

    def update_check(self, request, check_id):
        update = self._decode(request, CHECK_UPDATE)
        status = update.get("Status", "")
        if status not in CHECK_STATUSES:
            raise bad_request("Invalid check status: '%s'" % status)
        return self._set_ttl(request, check_id, status, update.get("Output", ""))

    def _set_ttl(self, request, check_id, status, output):
        principal = self.acl.resolve(request.token)
        with self.state.lock:  # a deregistration in between must give 404, not a KeyError
            check = self._known_check(check_id)
            self._require_check_write(principal, check)
            if not check.is_ttl:
                raise HTTPError(500, 'CheckID "%s" does not have associated TTL' % check_id)
            self.state.update_ttl(check_id, status, output)
        return Response()

    # -- health ---------------------------------------------------------------------------------------------

    _CODES = {PASSING: 200, WARNING: 429, CRITICAL: 503, MAINTENANCE: 503}

    @staticmethod
    def _wants_text(request):
        accept = request.headers.get("Accept") or ""
        return accept.startswith("text/plain") or request.query.get("format") == "text"

    def _service_health(self, service):
        status, checks = self.state.health(service.id)
        node = self.state.node_name
        return status, {"AggregatedStatus": status, "Service": service.view,
                        "Checks": [check.health_view(node) for check in checks]}

    def health_by_id(self, request, service_id):
        if not service_id:
            raise bad_request("Missing serviceID")
        principal = self.acl.resolve(request.token)
        with self.state.lock:
            service = self.state.services.get(service_id)
            if service is None:
                reason = "ServiceId %s not found" % service_id
                if self._wants_text(request):
                    return Response(404, reason.encode(), "text/plain", {"X-Consul-Reason": reason})
                return json_response(request, {"AggregatedStatus": CRITICAL, "Service": None, "Checks": None},
                                     404, {"X-Consul-Reason": reason})
            self.acl.require(principal, "service", "read", service.name)
            status, info = self._service_health(service)
        return self._health_response(request, status, info)

    def health_by_name(self, request, name):
        if not name:
            raise bad_request("Missing service Name")
        principal = self.acl.resolve(request.token)
        self.acl.require(principal, "service", "read", name)
        with self.state.lock:
            found = [self._service_health(service) for service in self.state.services.values()
                     if service.name == name]
        if not found:
            reason = "ServiceName %s Not Found" % name
            if self._wants_text(request):
                return Response(404, reason.encode(), "text/plain", {"X-Consul-Reason": reason})
            return json_response(request, [], 404, {"X-Consul-Reason": reason})
        worst = PASSING
        for status, _ in found:
            if self._CODES[status] > self._CODES[worst]:
                worst = status
        return self._health_response(request, worst, [info for _, info in found])

    def _health_response(self, request, status, body):
        headers = {"X-Consul-Reason": status}
        if self._wants_text(request):
            return Response(self._CODES[status], status.encode(), "text/plain", headers)
        return json_response(request, body, self._CODES[status], headers)

    # -- self -----------------------------------------------------------------------------------------------

    def agent_self(self, request):
        principal = self.acl.resolve(request.token)
        self.acl.require(principal, "agent", "read", self.state.node_name)
        state, low_high = self.state, self.state.sidecar_port_range
        with state.lock:
            ttl_checks = sum(1 for check in state.checks.values() if check.is_ttl)
            counts = (len(state.services), len(state.checks))
        return json_response(request, {
            "Config": {"Datacenter": state.datacenter, "PrimaryDatacenter": state.datacenter,
                       "NodeName": state.node_name, "NodeID": self.node_id, "Revision": "double",
                       "Server": True, "Version": VERSION, "BuildDate": "2024-10-14T00:00:00Z"},
            "DebugConfig": {"ACLsEnabled": self.acl.enabled, "ACLResolverSettings": {
                "ACLDefaultPolicy": self.acl.header_value}, "ConnectEnabled": True,
                "ConnectSidecarMinPort": low_high[0], "ConnectSidecarMaxPort": low_high[1],
                "Datacenter": state.datacenter, "NodeName": state.node_name, "HTTPPort": self.http_port(),
                "GRPCPort": -1, "GRPCTLSPort": -1, "EnableRemoteScriptChecks": False,
                "CheckOutputMaxSize": OUTPUT_MAX_SIZE},
            "Coord": {"Vec": [0.0] * 8, "Error": 1.5, "Adjustment": 0.0, "Height": 1e-05},
            "Member": {"Name": state.node_name, "Addr": "127.0.0.1", "Port": 8301,
                       "Tags": {"dc": state.datacenter, "role": "consul", "build": VERSION + ":double",
                                "id": self.node_id, "port": "8300", "vsn": "2", "vsn_max": "3", "vsn_min": "2"},
                       "Status": 1, "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
                       "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4},
            "Stats": {"agent": {"check_monitors": "0", "check_ttls": str(ttl_checks), "checks": str(counts[1]),
                                "services": str(counts[0])},
                      "build": {"prerelease": "", "revision": "double", "version": VERSION}},
            "Meta": {"consul-network-segment": "", "consul-version": VERSION},
        })


def with_content_hash(view, content_hash):
    """AgentService field order puts ContentHash right after EnableTagOverride."""
    out = {}
    for key, value in view.items():
        out[key] = value
        if key == "EnableTagOverride":
            out["ContentHash"] = content_hash
    return out


def _sorted_keys(mapping):
    return {key: mapping[key] for key in sorted(mapping)}


def _go_parse_bool(text):
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


class Router:
    """Go ServeMux semantics: exact paths, longest-prefix subtrees, 405 with Allow, OPTIONS."""

    NOT_FOUND = "Invalid URL path: not a recognized HTTP API endpoint\n"

    def __init__(self, routes):
        self.exact = {path: (method, handler) for path, method, handler in routes if not path.endswith("/")}
        self.prefixes = sorted(((path, method, handler) for path, method, handler in routes if path.endswith("/")),
                               key=lambda route: -len(route[0]))

    def find(self, path):
        if path in self.exact:
            method, handler = self.exact[path]
            return method, lambda request: handler(request)
        for prefix, method, handler in self.prefixes:
            if path.startswith(prefix):
                tail = path[len(prefix):]
                return method, lambda request: handler(request, tail)
        return None, None

    def dispatch(self, request):
        method, handler = self.find(request.path)
        if handler is None:
            if request.path.startswith("/v1/"):
                raise HTTPError(404, self.NOT_FOUND)
            raise HTTPError(404, "404 page not found\n")
        allow = "OPTIONS," + method
        if request.method == "OPTIONS":
            return Response(200, headers={"Allow": allow})
        if request.method != method:
            raise HTTPError(405, "method %s not allowed" % request.method, {"Allow": allow})
        return handler(request)


def clean_path(path):
    """Go's cleanPath: path.Clean, keeping a trailing slash."""
    parts = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    cleaned = "/" + "/".join(parts)
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


# --------------------------------------------------------------------------------------------------------------
# HTTP server


class LoggedRequest:
    def __init__(self, method, path, query, headers, body):
        self.at = time.time()  # when it arrived
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers  # http.client.HTTPMessage: .get() ignores case
        self.body = body

    def __repr__(self):
        return "<LoggedRequest %s %s>" % (self.method, self.path)


class ErrorInjection:
    def __init__(self, status, body, count, method, path_prefix):
        self.status, self.body, self.count = status, body, count
        self.method, self.path_prefix = method, path_prefix

    def take(self, method, path):
        """True if this rule answers the request (and uses up one of its count)."""
        if self.count is not None and self.count <= 0:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        if self.count is not None:
            self.count -= 1
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, double):
        self.double = double
        self.connections = set()
        self.connections_lock = threading.Lock()
        ThreadingHTTPServer.__init__(self, address, handler)

    def process_request(self, request, client_address):
        with self.connections_lock:
            self.connections.add(request)
        ThreadingHTTPServer.process_request(self, request, client_address)

    def shutdown_request(self, request):
        with self.connections_lock:
            self.connections.discard(request)
        ThreadingHTTPServer.shutdown_request(self, request)

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)):
            ThreadingHTTPServer.handle_error(self, request, client_address)

    def drop_connections(self):
        """A stopped agent takes its keep-alive connections down with it."""
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def send_response(self, code, message=None):
        # like Go's net/http: a Date header, no Server header
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def _handle(self):
        raw_path, _, raw_query = self.path.partition("?")
        path = unquote(raw_path)
        params = parse_qs(raw_query, keep_blank_values=True)
        body = self._read_body()
        request = Request(self.command, path, params, self.headers, body)
        response = self.server.double._answer(request, raw_path, raw_query)
        if response is not None:
            self._send(response)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, response):
        body = response.body
        encoding = self.headers.get("Accept-Encoding") or ""
        gzipped = "gzip" in encoding and len(body) >= 1400
        if gzipped:
            body = gzip.compress(body)
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Vary", "Accept-Encoding")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


# --------------------------------------------------------------------------------------------------------------
# The public facade


class ConsulDouble:
    """A local Consul agent for tests: real HTTP, faithful answers, and knobs for failures."""

    is_double = True

    def __init__(self, port=0, node_name="node1", datacenter="dc1", acl_default_policy=None, acl_tokens=None,
                 sidecar_port_range=(21000, 21255)):
        self._port = port
        self.latency = 0.0  # seconds before each request is handled
        self.reply_latency = 0.0  # seconds between handling a request and answering it (a slow network)
        self._not_ready_until = 0.0
        self._not_ready_reason = ""
        self.request_log = []
        self._log_lock = threading.Lock()
        self._injections = []
        self._state = AgentState(node_name, datacenter, tuple(sidecar_port_range or (0, 0)))
        self._acl = AclPolicy(acl_default_policy, acl_tokens)
        self._api = AgentAPI(self._state, self._acl, ServiceBuilder(datacenter), lambda: self._port,
                             lambda: self._server is not None)
        self._router = Router(self._api.routes())
        self._server = None
        self._thread = None
        self._reaper_stop = None

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self):
        if self._server is not None:
            return self
        self._server = _Server(("127.0.0.1", self._port), _Handler, self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="consul-double-%d" % self._port, daemon=True)
        self._thread.start()
        self._reaper_stop = threading.Event()
        threading.Thread(target=self._reap, args=(self._reaper_stop,), daemon=True,
                         name="consul-double-reaper").start()
        return self

    def stop(self):
        server, self._server = self._server, None
        if server is None:
            return
        self._reaper_stop.set()
        server.shutdown()
        server.server_close()
        server.drop_connections()
        self._thread.join(5)
        with self._state.changed:
            self._state.changed.notify_all()

    def wipe(self):
        self._state.wipe()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def _reap(self, stopped):
        while not stopped.wait(30):
            self._state.reap_critical()

    @property
    def port(self):
        return self._port

    @property
    def http_addr(self):
        return "127.0.0.1:%d" % self._port

    @property
    def url(self):
        return "http://" + self.http_addr

    # -- knobs ----------------------------------------------------------------------------------------------

    def inject_errors(self, status, body="injected", count=None, method=None, path_prefix=None):
        with self._log_lock:
            self._injections.append(ErrorInjection(status, body, count, method, path_prefix))

    def not_ready_for(self, seconds, reason="No known Consul servers"):
        """Like an agent whose cluster has no leader yet, with central service config on
        (agent/service_manager.go): for ``seconds``, every registration fails with
        500 ``could not retrieve initial service_defaults config for service "<id>": <reason>``
        and registers nothing."""
        self._not_ready_until = time.monotonic() + seconds
        self._not_ready_reason = reason

    def clear_errors(self):
        with self._log_lock:
            self._injections = []

    def count_requests(self, method=None, path_prefix=None):
        with self._log_lock:
            return sum(1 for r in self.request_log
                       if (method is None or r.method == method.upper())
                       and (path_prefix is None or r.path.startswith(path_prefix)))

    # -- state, as the agent would answer -------------------------------------------------------------------

    def services(self):
        with self._state.lock:
            return _sorted_keys({sid: json.loads(json.dumps(s.view)) for sid, s in self._state.services.items()})

    def checks(self):
        with self._state.lock:
            node = self._state.node_name
            return _sorted_keys({cid: c.view(node) for cid, c in self._state.checks.items()})

    def service(self, service_id):
        with self._state.lock:
            service = self._state.services.get(service_id)
            if service is None:
                return None
            return json.loads(json.dumps(with_content_hash(service.view, service.content_hash())))

    # -- request handling -----------------------------------------------------------------------------------

    def _answer(self, request, raw_path, raw_query):
        with self._log_lock:
            self.request_log.append(LoggedRequest(request.method, request.path, request.query, request.headers,
                                                  request.body))
        if self.latency:
            time.sleep(self.latency)
        response = self._injected(request) or self._not_ready(request) or self._dispatch(request, raw_path, raw_query)
        response.headers.setdefault("X-Consul-Default-ACL-Policy", self._acl.header_value)
        if self.reply_latency:
            time.sleep(self.reply_latency)  # applied already: a client that gives up has lost the answer
        return response

    def _injected(self, request):
        with self._log_lock:
            for rule in self._injections:
                if rule.take(request.method, request.path):
                    return Response(rule.status, rule.body.encode(), "text/plain; charset=utf-8")
        return None

    def _not_ready(self, request):
        if time.monotonic() >= self._not_ready_until or request.method != "PUT" \
                or request.path != "/v1/agent/service/register":
            return None
        try:
            definition = {k.lower(): v for k, v in json.loads(request.body or b"{}").items()}
        except (ValueError, AttributeError):
            return None  # the decoder's own error comes first
        service_id = definition.get("id") or definition.get("name") or ""
        return Response(500, ('could not retrieve initial service_defaults config for service "%s": %s'
                              % (service_id, self._not_ready_reason)).encode(), "text/plain; charset=utf-8")

    def _dispatch(self, request, raw_path, raw_query):
        cleaned = clean_path(request.path)
        if cleaned != request.path:
            location = cleaned + ("?" + raw_query if raw_query else "")
            return Response(301, ('<a href="%s">Moved Permanently</a>.\n\n' % location).encode(),
                            "text/html; charset=utf-8", {"Location": location})
        try:
            return self._router.dispatch(request)
        except HTTPError as error:
            return Response(error.status, error.body.encode(), error.content_type, error.headers)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Serve a Consul agent test double on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--node-name", default="node1")
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args(argv)
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    double = ConsulDouble(port=args.port, node_name=args.node_name)
    double.latency = args.latency
    double.start()
    print("consul double listening on " + double.url, flush=True)
    try:
        while not stopped.wait(0.1):
            pass
    finally:
        double.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
