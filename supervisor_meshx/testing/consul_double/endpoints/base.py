"""What every endpoint group shares: the agent's state, the catalog and ACLs, body decoding, ?wait, ?filter,
blocking queries and the ACL-filtered header."""

import random
import time

from ..errors import HTTPError, bad_request
from ..filter_expressions import Filter, FilterError
from ..go_duration import SECOND, GoDuration
from ..go_json import DecodeError, GoJSONDecoder


class Endpoints:
    """Base of the endpoint groups AgentAPI is made of."""

    def __init__(self, state, catalog, acl, builder, http_port, serving):
        self.serving = serving  # False once the agent is stopped: blocking queries give up
        self.state = state
        self.catalog = catalog
        self.acl = acl
        self.builder = builder
        self.decoder = GoJSONDecoder()
        self.http_port = http_port

    def _decode(self, request, struct):
        try:
            return self.decoder.decode(request.body, struct)
        except DecodeError as exc:
            raise bad_request("Request decode failed: %s" % exc)

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

    def _blocking_query(self, request, current_index):
        """?index=N&wait=D (catalog and health endpoints): wait until current_index() passes N, then the
        X-Consul-* query headers for the index the answer is read at."""
        min_index = self._index(request)
        if min_index > 0:
            wait = self._wait(request)
            wait += random.uniform(0, wait / 16)  # Consul's jitter
            self.catalog.wait_past(current_index, min_index, time.monotonic() + wait, self.serving)
        return {"X-Consul-Index": str(current_index()), "X-Consul-KnownLeader": "true",
                "X-Consul-LastContact": "0"}

    @staticmethod
    def _index(request):
        text = request.query.get("index", "")
        if not text:
            return 0
        if not text.isdigit():
            raise bad_request("Invalid index")
        return int(text)

    def _can_read_instance(self, principal, node, service_name):
        """What Consul's ACL filter asks of a catalog or health result: node:read and service:read."""
        return (self.acl.allowed(principal, "node", "read", node.name)
                and self.acl.allowed(principal, "service", "read", service_name))
