"""/v1/agent/health/service/id/:id and /name/:name: the local aggregate health, as status code, JSON or text."""

from ..checks import CRITICAL, MAINTENANCE, PASSING, WARNING
from ..errors import bad_request
from ..routing import Response, json_response
from .base import Endpoints


class AgentHealthEndpoints(Endpoints):
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
