"""How to reach the local Consul agent: address, TLS files and ACL token.

The address is TCP (``host:port``, ``http(s)://host:port``) or a unix socket
(``unix:///path/to/consul.sock``).  Defaults follow the ``consul`` CLI: ``CONSUL_HTTP_ADDR``,
``CONSUL_HTTP_TOKEN`` and ``CONSUL_HTTP_TOKEN_FILE`` from supervisord's
environment, else ``http://127.0.0.1:8500`` and no token.
"""
import os
import re

_ADDRESS = re.compile(r"(?:(?P<scheme>https?)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\[\]]+):(?P<port>\d{1,5})/?\Z")
_UNIX_ADDRESS = re.compile(r"unix://(?P<path>/[^\x00-\x1f\x7f]{1,106})\Z")  # sun_path holds 107 bytes and a NUL


class ConsulConnection:
    def __init__(self, address, token="", token_file="", cacert="", client_cert="", client_key=""):
        address = address.strip()
        unix = _UNIX_ADDRESS.match(address)
        match = _ADDRESS.match(address)
        if unix and len(unix.group("path").encode()) <= 106:
            self.scheme, self.host, self.port = "unix", unix.group("path"), 0
            self.address = address
        elif match and 0 < int(match.group("port")) < 65536:
            self.scheme = match.group("scheme") or "http"
            self.host = match.group("host")
            self.port = int(match.group("port"))
            self.address = "%s://%s:%d" % (self.scheme, self.host, self.port)
        else:
            # not the value itself: a user:password@ part would end up in the log
            raise ValueError("consul_http_addr must be host:port, http(s)://host:port (no user:password@, "
                             "no path) or unix:///absolute/path/to/consul.sock (at most 106 bytes)")
        self.verify = cacert or True
        self.cert = (client_cert, client_key) if client_cert and client_key else (client_cert or None)
        self._token = token
        self._token_file = token_file
        self.token_error = ""  # why the token file could not be read last time
        self._tls = (cacert, client_cert, client_key)

    @classmethod
    def from_settings(cls, settings, environ=os.environ):
        return cls(
            settings.consul_http_addr or environ.get("CONSUL_HTTP_ADDR") or "http://127.0.0.1:8500",
            token=settings.consul_http_token or environ.get("CONSUL_HTTP_TOKEN", ""),
            token_file=settings.consul_http_token_file or environ.get("CONSUL_HTTP_TOKEN_FILE", ""),
            cacert=settings.consul_cacert,
            client_cert=settings.consul_client_cert,
            client_key=settings.consul_client_key,
        )

    def proxy_environment(self):
        """What a proxy needs to reach the agent as the plugin does (the consul CLI's
        variables); the token goes by file when there is one, never on a command line."""
        environment = {"CONSUL_HTTP_ADDR": self.address}
        if self._token:
            environment["CONSUL_HTTP_TOKEN"] = self._token
        elif self._token_file:
            environment["CONSUL_HTTP_TOKEN_FILE"] = self._token_file
        for name, path in zip(("CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY"), self._tls):
            if path:
                environment[name] = path
        return environment

    def token(self):
        """The ACL token; a token file is read at each call so that rotation needs no reload."""
        if self._token:
            return self._token
        if self._token_file:
            token, self.token_error = read_token_file(self._token_file)
            return token
        return ""


MAX_TOKEN = 512  # characters; Consul's tokens are UUIDs


def read_token_file(path):
    """(token, "") or ("", why not).  Only a file that holds one token-like line counts, so that
    no other file's content is ever sent to the agent."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_TOKEN + 2)
    except OSError as exc:
        return "", "the token file %s could not be read (%s)" % (path, exc.strerror or type(exc).__name__)
    token = raw.strip().decode("ascii", errors="replace")
    if not token or len(raw) > MAX_TOKEN + 1 or not all(33 <= ord(c) < 127 for c in token):
        return "", "the token file %s holds no token (one line, at most %d printable characters)" % (
            path, MAX_TOKEN)
    return token, ""
