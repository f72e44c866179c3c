"""The plugin's settings: the keys of its ``[rpcinterface:meshx]`` section.

supervisord hands every key other than ``supervisor.rpcinterface_factory`` to
the factory as a lower-cased string.  Unknown keys and bad values stop
supervisord at start-up with a message naming the key.
"""
from supervisor.datatypes import dict_of_key_value_pairs

from supervisor_meshx.executables import DEFAULT_EXECUTABLES
from supervisor_meshx.restart_policy import RestartPolicy


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


def _word_list(_key, text):
    return tuple(text.replace(",", " ").split())


class Settings:
    """Parsed settings, with the defaults documented in README."""

    KEYS = {
        "max_proxy_restarts": (_restart_limit, "5"),
        "proxy_backoff_seconds": (_non_negative_number, "1"),
        "proxy_backoff_max_seconds": (_non_negative_number, "30"),
        "proxy_startsecs": (_non_negative_number, "1"),
        "proxy_stopwaitsecs": (_non_negative_number, "10"),
        "proxy_environment": (_key_value_pairs, ""),
        "proxy_executables": (_word_list, " ".join(DEFAULT_EXECUTABLES)),
    }

    def __init__(self, **config):
        unknown = sorted(set(config) - set(self.KEYS))
        if unknown:
            raise ConfigError("unknown key(s) in [rpcinterface:meshx]: %s" % ", ".join(unknown))
        for key, (parse, default) in self.KEYS.items():
            setattr(self, key, parse(key, config.get(key, default)))

    def restart_policy(self):
        return RestartPolicy(self.max_proxy_restarts, self.proxy_backoff_seconds, self.proxy_backoff_max_seconds)
