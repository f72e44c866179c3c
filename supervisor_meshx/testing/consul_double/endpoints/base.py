"""What every endpoint group shares: the agent's state and ACLs, body decoding, ?wait, ?filter and the
ACL-filtered header."""

import uuid

from ..errors import HTTPError, bad_request
from ..filter_expressions import Filter, FilterError
from ..go_duration import SECOND, GoDuration
from ..go_json import DecodeError, GoJSONDecoder


class Endpoints:
    """Base of the endpoint groups AgentAPI is made of."""

    def __init__(self, state, acl, builder, http_port, serving):
        self.serving = serving  # False once the agent is stopped: blocking queries give up
        self.state = state
        self.acl = acl
        self.builder = builder
        self.decoder = GoJSONDecoder()
        self.http_port = http_port
        self.node_id = str(uuid.uuid4())

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
