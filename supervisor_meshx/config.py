"""The plugin's settings: the keys of its ``[rpcinterface:meshx]`` section.

supervisord hands every key other than ``supervisor.rpcinterface_factory`` to
the factory as a lower-cased string.  Unknown keys and bad values stop
supervisord at start-up with a message naming the key.
"""
import ipaddress
import json
import re
import socket

from supervisor.datatypes import boolean, dict_of_key_value_pairs

from supervisor_meshx.consul_connection import ConsulConnection
from supervisor_meshx import executables
from supervisor_meshx.executables import DEFAULT_EXECUTABLES
from supervisor_meshx.ports import parse_port_range
from supervisor_meshx.restart_policy import RestartPolicy


MAX_DRAIN_SECONDS = 3600


class ConfigError(ValueError):
    pass


def _non_negative_number(key, text):
    try:
        value = float(text)
    except ValueError:
        raise ConfigError("%s must be a number, not %r" % (key, text))
    if value < 0:
        raise ConfigError("%s must not be negative" % key)
    return value


def _positive_number(key, text):
    value = _non_negative_number(key, text)
    if not value > 0:
        raise ConfigError("%s must be above 0" % key)
    return value


def _drain_seconds(key, text):
    value = _non_negative_number(key, text)
    if value > MAX_DRAIN_SECONDS:
        raise ConfigError("%s must be at most %d" % (key, MAX_DRAIN_SECONDS))
    return value


def _interval_or_off(key, text):
    if text.strip().lower() == "off":
        return None
    return _positive_number(key, text)


def _positive_whole_number(key, text):
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError("%s must be a whole number from 1, not %r" % (key, text))
    return int(text)


def _restart_limit(key, text):
    if text.strip().lower() == "unlimited":
        return None
    if not text.strip().isdigit():
        raise ConfigError("%s must be a whole number or 'unlimited', not %r" % (key, text))
    return int(text)


def _key_value_pairs(key, text):
    try:
        return dict_of_key_value_pairs(text)
    except ValueError:
        # the parser's message would quote the value, which may hold secrets
        raise ConfigError("%s must be KEY=\"value\" pairs separated by commas" % key)


def _executables(key, text):
    entries = executables.parse(text)
    if not entries:
        raise ConfigError("%s must name at least one program" % key)
    return entries


def _text(_key, text):
    return text.strip()


def _boolean(key, text):
    try:
        return boolean(text)
    except ValueError:
        raise ConfigError("%s must be true or false, not %r" % (key, text))


def _node_name(key, text):
    name = text.strip() or socket.gethostname().split(".")[0]
    # a host name may hold characters a DNS-safe service id may not
    name = re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")
    if not name:
        raise ConfigError("%s must contain letters or digits" % key)
    return name


def _port_range(key, text):
    try:
        return parse_port_range(text)
    except ValueError as exc:
        raise ConfigError("%s: %s" % (key, exc))


def _address(key, text):
    try:
        ipaddress.ip_address(text.strip())
    except ValueError:
        raise ConfigError("%s must be an IP address, not %r" % (key, text))
    return text.strip()


def _json_file(key, path):
    if not path.strip():
        return {}
    try:
        with open(path.strip()) as f:
            value = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError("%s: cannot read %s: %s" % (key, path, exc))
    if not isinstance(value, dict):
        raise ConfigError("%s: %s must hold a JSON object" % (key, path))
    return value


def _disjoint(*ranges):
    for i, (key, (low, high)) in enumerate(ranges):
        for other, (other_low, other_high) in ranges[i + 1:]:
            if low <= other_high and other_low <= high:
                raise ConfigError("%s %d-%d overlaps %s %d-%d: ports would be handed out twice"
                                  % (key, low, high, other, other_low, other_high))


class Settings:
    """Parsed settings, with the defaults documented in README."""

    KEYS = {
        "max_proxy_restarts": (_restart_limit, "5"),
        "proxy_backoff_seconds": (_non_negative_number, "1"),
        "proxy_backoff_max_seconds": (_non_negative_number, "30"),
        "proxy_startsecs": (_non_negative_number, "1"),
        "proxy_stopwaitsecs": (_non_negative_number, "10"),
        "proxy_health_interval": (_interval_or_off, "off"),
        "proxy_health_failures": (_positive_whole_number, "3"),
        "proxy_environment": (_key_value_pairs, ""),
        "proxy_executables": (_executables, DEFAULT_EXECUTABLES),
        "consul_http_addr": (_text, ""),
        "consul_http_token": (_text, ""),
        "consul_http_token_file": (_text, ""),
        "consul_cacert": (_text, ""),
        "consul_client_cert": (_text, ""),
        "consul_client_key": (_text, ""),
        "consul_timeout": (_positive_number, "10"),
        "node_name": (_node_name, ""),
        "service_template": (_json_file, ""),
        "upstream_template": (_json_file, ""),
        "tcp_address": (_address, "127.0.0.1"),
        "port_range": (_port_range, "22000-32767"),
        "sidecar_port_range": (_port_range, "21000-21999"),
        "admin_port_range": (_port_range, "19000-19999"),
        "reconcile_interval": (_positive_number, "30"),
        "state_file": (_text, ""),
        "deregister_on_shutdown": (_boolean, "true"),
        "stop_drain_seconds": (_drain_seconds, "0"),
    }

    def __init__(self, **config):
        unknown = sorted(set(config) - set(self.KEYS))
        if unknown:
            raise ConfigError("unknown key(s) in [rpcinterface:meshx]: %s" % ", ".join(unknown))
        for key, (parse, default) in self.KEYS.items():
            setattr(self, key, parse(key, config.get(key, default)))
        _disjoint(("port_range", self.port_range), ("sidecar_port_range", self.sidecar_port_range),
                  ("admin_port_range", self.admin_port_range))

    def consul_connection(self):
        try:
            return ConsulConnection.from_settings(self)
        except ValueError as exc:
            raise ConfigError(str(exc))

    def restart_policy(self):
        return RestartPolicy(self.max_proxy_restarts, self.proxy_backoff_seconds, self.proxy_backoff_max_seconds)
