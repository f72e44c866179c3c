"""ConsulDouble: one Consul agent for tests, real HTTP, faithful answers, and knobs for failures."""

import json
import threading
import time

from .acl import AclPolicy
from .agent_state import AgentState
from .catalog import Catalog
from .api import AgentAPI
from .endpoints.agent_services import with_content_hash
from .error_injection import ErrorInjection
from .errors import HTTPError
from .go_json import sorted_keys
from .http_server import Handler, Server, UnixServer
from .request_log import LoggedRequest
from .routing import Response, Router, clean_path
from .service_builder import ServiceBuilder


class ConsulDouble:
    """A local Consul agent for tests: real HTTP, faithful answers, and knobs for failures."""

    is_double = True

    def __init__(self, port=0, node_name="node1", datacenter="dc1", acl_default_policy=None, acl_tokens=None,
                 sidecar_port_range=(21000, 21255), address="127.0.0.1", catalog=None, unix_socket=None):
        """``address``: the HTTP bind address and the node's address in the catalog.  ``catalog``: the one
        shared with the other agents of a cluster (see ConsulCluster); by default a catalog of its own.
        ``unix_socket``: a path where the same API is also served (``unix_addr``)."""
        self._port = port
        self.unix_socket = unix_socket
        self._unix_server = None
        self.node_name = node_name
        self.address = address
        self.latency = 0.0  # seconds before each request is handled
        self.reply_latency = 0.0  # seconds between handling a request and answering it (a slow network)
        self._not_ready_until = 0.0
        self._not_ready_reason = ""
        self.request_log = []
        self._log_lock = threading.Lock()
        self._injections = []
        self._catalog = Catalog() if catalog is None else catalog
        self._state = AgentState(node_name, datacenter, tuple(sidecar_port_range or (0, 0)), address, self._catalog)
        self._acl = AclPolicy(acl_default_policy, acl_tokens)
        self._api = AgentAPI(self._state, self._catalog, self._acl, ServiceBuilder(datacenter), lambda: self._port,
                             lambda: self._server is not None)
        self._router = Router(self._api.routes())
        self._server = None
        self._thread = None
        self._reaper_stop = None

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self):
        if self._server is not None:
            return self
        self._server = Server((self.address, self._port), Handler, self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="consul-double-%d" % self._port, daemon=True)
        self._thread.start()
        if self.unix_socket:
            self._unix_server = UnixServer(self.unix_socket, Handler, self)
            threading.Thread(target=self._unix_server.serve_forever, kwargs={"poll_interval": 0.05},
                             name="consul-double-unix", daemon=True).start()
        self._state.clock.start()
        self._reaper_stop = threading.Event()
        threading.Thread(target=self._reap, args=(self._reaper_stop,), daemon=True,
                         name="consul-double-reaper").start()
        self._catalog.join(self.node_name, self._state.node_id, self.address, self._state.datacenter)
        self._state.sync_catalog()
        return self

    def stop(self):
        server, self._server = self._server, None
        if server is None:
            return
        self._reaper_stop.set()
        self._state.clock.stop()  # checks wait for the restart: what fell due meanwhile runs then
        self._catalog.fail(self.node_name)  # like an agent that died: serfHealth critical, entries kept
        unix_server, self._unix_server = self._unix_server, None
        for each in filter(None, (server, unix_server)):
            each.shutdown()
            each.server_close()
            each.drop_connections()
        self._thread.join(5)
        for condition in (self._state.changed, self._catalog.changed):
            with condition:
                condition.notify_all()

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
        return "%s:%d" % (self.address, self._port)

    @property
    def url(self):
        return "http://" + self.http_addr

    @property
    def unix_addr(self):
        return "unix://" + self.unix_socket if self.unix_socket else None

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

    def drop_connections(self):
        """Close every kept-alive client connection, as an agent restart or an idle timeout does."""
        for server in filter(None, (self._server, self._unix_server)):
            server.drop_connections()

    def clear_errors(self):
        with self._log_lock:
            self._injections = []

    def count_requests(self, method=None, path_prefix=None, since=None, until=None):
        """Requests received, of ``method`` and under ``path_prefix`` if given, and between
        ``since`` and ``until`` (time.time()) if given."""
        with self._log_lock:
            return sum(1 for r in self.request_log
                       if (method is None or r.method == method.upper())
                       and (path_prefix is None or r.path.startswith(path_prefix))
                       and (since is None or r.at >= since) and (until is None or r.at < until))

    # -- state, as the agent would answer -------------------------------------------------------------------

    def services(self):
        with self._state.lock:
            return sorted_keys({sid: json.loads(json.dumps(s.view)) for sid, s in self._state.services.items()})

    def checks(self):
        with self._state.lock:
            node = self._state.node_name
            return sorted_keys({cid: c.view(node) for cid, c in self._state.checks.items()})

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
