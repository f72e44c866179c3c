"""Blocking calls to the local Consul agent; run them on worker threads only.

python-consul2 wraps few of the endpoints a mesh needs (no sidecar
registration, no health by id, no check update), so every call goes through
a python-consul2 HTTP transport (consul_transport: TCP, TLS or a unix socket) and this module reads the status codes itself: 404s
become None/False instead of python-consul2's silent False, and every other
non-200 answer raises ``ConsulError`` with the agent's status and message.
The ACL token is sent in the ``X-Consul-Token`` header and never appears in
an error.
"""
import json
import re
import threading
import time

from supervisor_meshx.consul_connection import read_token_file
from supervisor_meshx.consul_transport import ConsulTransport, TransportError

MAX_KEPT_UPDATES = 8192  # check updates' bytes kept (a few statuses and outputs each, for thousands of checks)
_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


class ConsulUnavailable(Exception):
    """The agent could not be reached."""


class ConsulError(Exception):
    """The agent answered with an error status."""

    def __init__(self, status, message):
        Exception.__init__(self, "%d %s" % (status, message))
        self.status = status
        self.message = message


class ConsulAgent:
    def __init__(self, connection, timeout, log, on_call=lambda outcome, seconds: None):
        """``timeout``: seconds an agent call may take (a hung agent must not hold a worker forever);
        ``log(message)``: for a token file that can't be read (any thread);
        ``on_call(outcome, seconds)``: every call, ok, error or unavailable (for the metrics)."""
        self._on_call = on_call
        self._connection = connection
        self._timeout = timeout
        self._log = log
        self._token_error = ""
        self._local = threading.local()
        self._clients = []
        self._lock = threading.Lock()
        self._update_requests = {}  # (check id, status, output, token) -> the update's bytes (any thread)

    def _http(self):
        # a connection is not safe to share between threads
        http = getattr(self._local, "http", None)
        if http is None:
            c = self._connection
            http = ConsulTransport(c.host, c.port, c.scheme, c.verify, c.cert, self._timeout)
            self._local.http = http
            with self._lock:
                self._clients.append(http)
        return http

    def close(self):
        """Close every kept-alive connection.

        Needed before a supervisord reload, which closes all descriptors from
        5 up: a socket object left open would later close whatever new file
        got its descriptor number.
        """
        with self._lock:
            clients, self._clients = self._clients, []
        for http in clients:
            http.close()

    def _request(self, method, path, params=None, body=None, token_file=None):
        """``token_file``: a service's own token (else the plugin's)."""
        return self._exchange([(method, path, params, body, token_file)])[0]

    def _exchange(self, calls, linger=0.0):
        """Answers to ``calls`` [(method, path, params, body, token_file)], sent pipelined
        (``linger``: see ``ConsulTransport.exchange``)."""
        http = self._http()
        headers = self._headers_by_file()
        requests = [http.request(method, path, params, "" if body is None and method != "GET" else body,
                                 headers(token_file))
                    for method, path, params, body, token_file in calls]
        return self._send(http, requests, linger)

    def _send(self, http, requests, linger):
        """The answers to ``requests`` (bytes), counted in the metrics."""
        started = time.monotonic()
        try:
            answers = http.exchange(requests, linger)
        except TransportError as exc:
            self._on_call("unavailable", time.monotonic() - started)
            raise ConsulUnavailable("Consul agent at %s unreachable (%s)"
                                    % (self._connection.address, type(exc).__name__))
        each = max(0.0, time.monotonic() - started - linger) / max(1, len(answers))
        for answer in answers:
            self._on_call("ok" if answer.code in (200, 404, 429, 503) else "error", each)
        return answers

    def _headers_by_file(self):
        """``_headers`` for the calls of one exchange: each token file read once."""
        read = {}

        def headers(token_file):
            if token_file not in read:
                read[token_file] = self._headers(token_file)
            return read[token_file]
        return headers

    def _headers(self, token_file):
        if token_file:
            token, self._local.token_error = read_token_file(token_file)
        else:
            token = self._connection.token()
            self._note_token_error(self._connection.token_error)
            self._local.token_error = self._connection.token_error
        return {"X-Consul-Token": token} if token else {}

    def _note_token_error(self, error):
        with self._lock:
            changed, self._token_error = error != self._token_error, error
        if changed:
            self._log("meshx: %s; calls go without a token" % error if error else
                      "meshx: the token file can be read again")

    def _ok(self, response, allow_404=False):
        if response.code == 200:
            return True
        if response.code == 404 and allow_404:
            return False
        message = response.body.strip() if response.body else ""
        token_error = getattr(self._local, "token_error", "")
        if response.code == 403 and token_error:
            message += " (%s)" % token_error
        raise ConsulError(response.code, message)

    # Calls about one service take ``token_file``: that service's own token, if it has one.

    def register(self, definition, token_file=None):
        self._ok(self._request("PUT", "/v1/agent/service/register", body=definition, token_file=token_file))

    def deregister(self, service_id, token_file=None):
        """Deregister a service (and the sidecar Consul made for it); False if unknown."""
        return self._ok(self._request("PUT", "/v1/agent/service/deregister/" + _segment(service_id),
                                      token_file=token_file), allow_404=True)

    def leave(self, services, drain_reason=""):
        """At shutdown: each of ``services`` (service_id, token_file) in maintenance (with
        ``drain_reason``) or else deregistered, all pipelined in one exchange; errors ignored
        (the agent reaps, or the next start fixes them)."""
        if drain_reason:
            calls = [("PUT", "/v1/agent/service/maintenance/" + _segment(service_id),
                      [("enable", "true"), ("reason", drain_reason)], None, token_file)
                     for service_id, token_file in services]
        else:
            calls = [("PUT", "/v1/agent/service/deregister/" + _segment(service_id), None, None, token_file)
                     for service_id, token_file in services]
        try:
            self._exchange(calls)
        except ConsulUnavailable:
            pass

    def service(self, service_id, token_file=None):
        """The agent's definition of a service, or None if it has none."""
        response = self._request("GET", "/v1/agent/service/" + _segment(service_id), token_file=token_file)
        return json.loads(response.body) if self._ok(response, allow_404=True) else None

    def maintenance(self, service_id, enable, reason="", token_file=None):
        """Put a service in maintenance (Consul stops routing to it) or take it out; False if unknown."""
        params = [("enable", "true" if enable else "false")] + ([("reason", reason)] if reason else [])
        return self._ok(self._request("PUT", "/v1/agent/service/maintenance/" + _segment(service_id),
                                      params=params, token_file=token_file), allow_404=True)

    def services(self, filter_expression=None):
        """Every service the agent has, by id (one call: the reconciler's periodic pass); with
        ``filter_expression`` (Consul's filter language) only those it selects."""
        params = [("filter", filter_expression)] if filter_expression else None
        response = self._request("GET", "/v1/agent/services", params=params)
        self._ok(response)
        services = loads_by_member(response.body)
        if not isinstance(services, dict):
            raise ConsulError(response.code, "unexpected answer to /v1/agent/services")
        return {k: v for k, v in services.items() if isinstance(v, dict)}

    def health(self, service_id, token_file=None):
        """passing, warning, critical or maintenance; None for an unknown service."""
        response = self._request("GET", "/v1/agent/health/service/id/" + _segment(service_id),
                                 params=[("format", "text")], token_file=token_file)
        if response.code in (200, 429, 503):
            return response.body.strip()
        self._ok(response, allow_404=True)
        return None

    def update_checks(self, updates, linger=0.0):
        """Set TTL checks' statuses, all in one pipelined exchange: ``updates`` are
        (check_id, status, output, token_file); one result each: None, a LookupError
        (the agent has no such check) or a ConsulError.  ConsulUnavailable for all.
        ``linger``: see ``ConsulTransport.exchange``."""
        http = self._http()
        headers = self._headers_by_file()
        requests = [self._update_request(http, check_id, status, output, headers(token_file))
                    for check_id, status, output, token_file in updates]
        answers = self._send(http, requests, linger)
        results = []
        for (check_id, _status, _output, _token_file), answer in zip(updates, answers):
            try:
                found = self._ok(answer, allow_404=True)
                results.append(None if found else LookupError("Consul has no check %s" % check_id))
            except ConsulError as exc:
                results.append(exc)
        return results

    def _update_request(self, http, check_id, status, output, headers):
        """A check update's bytes, made once: the same few go out every interval for every check."""
        key = (check_id, status, output, headers.get("X-Consul-Token"))
        request = self._update_requests.get(key)
        if request is None:
            if len(self._update_requests) >= MAX_KEPT_UPDATES:
                self._update_requests.clear()
            request = self._update_requests[key] = http.request(
                "PUT", "/v1/agent/check/update/" + _segment(check_id), None, {"Status": status, "Output": output},
                headers)
        return request


def _segment(value):
    """An id as a path segment; the transport percent-encodes the path itself."""
    if "/" in value or not value:
        raise ValueError("an id must be non-empty and hold no '/': %r" % value)
    return value


def loads_by_member(text):
    """``json.loads(text)``, an object decoded one member at a time.  One ``json.loads`` keeps
    the interpreter for the whole text (~30 ms for the agent's listing of 1,000 services), and
    supervisord's loop waits for it; between two members the loop may take its turn."""
    position = _SPACE.match(text).end()
    if not text.startswith("{", position):
        return json.loads(text)
    members = {}
    position = _SPACE.match(text, position + 1).end()
    done = text.startswith("}", position)
    while not done:
        key, position = _DECODER.raw_decode(text, position)
        position = _SPACE.match(text, position).end()
        if not isinstance(key, str) or not text.startswith(":", position):
            raise json.JSONDecodeError("Expecting a string and ':'", text, position)
        members[key], position = _DECODER.raw_decode(text, _SPACE.match(text, position + 1).end())
        position = _SPACE.match(text, position).end()
        done = text.startswith("}", position)
        if not done:
            if not text.startswith(",", position):
                raise json.JSONDecodeError("Expecting ',' delimiter", text, position)
            position = _SPACE.match(text, position + 1).end()
    if _SPACE.match(text, position + 1).end() != len(text):  # past the closing brace
        raise json.JSONDecodeError("Extra data", text, position + 1)
    return members
