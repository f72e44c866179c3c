"""/v1/health/service/:name and /v1/health/connect/:name: instances with their node and checks, across nodes,
?passing dropping any instance with a check that is not passing (its node's serfHealth included)."""

from ..catalog import is_connect_instance
from ..catalog_views import check_service_node_view
from ..checks import PASSING
from ..errors import bad_request
from ..go_strconv import parse_bool
from ..routing import json_response
from .base import Endpoints


class HealthEndpoints(Endpoints):

    def health_service(self, request, name):
        return self._check_service_nodes(request, name, ("service", name), lambda view: view["Service"] == name)

    def health_connect(self, request, name):
        """The Connect-capable instances: sidecar proxies for the service, and the service if Connect-native."""
        return self._check_service_nodes(request, name, ("connect", name),
                                         lambda view: is_connect_instance(view, name))

    def _check_service_nodes(self, request, name, key, wanted):
        if not name:
            raise bad_request("Missing service name")
        passing = self._passing(request)
        principal = self.acl.resolve(request.token)
        condition = self._filter(request)
        headers = self._blocking_query(request, lambda: self.catalog.query_index(key))
        if key[0] == "connect" and not self.acl.allowed(principal, "service", "read", name):
            return json_response(request, [], headers=headers)  # Consul answers an empty list
        tags = request.params.get("tag", [])
        found = [(node, record) for node, record in self.catalog.instances(wanted)
                 if all(tag in record.value["Tags"] for tag in tags)]
        readable = [(node, record) for node, record in found
                    if self._can_read_instance(principal, node, record.value["Service"])]
        headers.update(self._filtered_header(request, len(readable) != len(found)))
        views = []
        for node, record in readable:
            checks = self.catalog.checks_of(node, record.value["ID"])
            if passing and any(check.value["Status"] != PASSING for check in checks):
                continue
            view = check_service_node_view(node, record, checks)
            if condition is None or condition.matches(view):
                views.append(view)
        return json_response(request, views, headers=headers)

    @staticmethod
    def _passing(request):
        if not request.has("passing"):
            return False
        value = request.query["passing"]
        if value == "":
            return True
        parsed = parse_bool(value)
        if parsed is None:
            raise bad_request("Invalid value for ?passing")
        return parsed
