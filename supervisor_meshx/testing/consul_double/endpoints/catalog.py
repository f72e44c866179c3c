"""/v1/catalog/service/:name and /v1/catalog/services: the datacenter's catalog, read from any agent."""

from ..catalog_views import service_node_view
from ..errors import bad_request
from ..routing import json_response
from .base import Endpoints


class CatalogEndpoints(Endpoints):

    def catalog_service(self, request, name):
        if not name:
            raise bad_request("Missing service name")
        principal = self.acl.resolve(request.token)
        condition = self._filter(request)
        headers = self._blocking_query(request, lambda: self.catalog.query_index(("service", name)))
        tags = request.params.get("tag", [])
        found = [(node, record) for node, record in self.catalog.instances(lambda view: view["Service"] == name)
                 if all(tag in record.value["Tags"] for tag in tags)]
        readable = [(node, record) for node, record in found if self._can_read_instance(principal, node, name)]
        headers.update(self._filtered_header(request, len(readable) != len(found)))
        views = [service_node_view(node, record) for node, record in readable]
        return json_response(request, [view for view in views if condition is None or condition.matches(view)],
                             headers=headers)

    def catalog_services(self, request):
        principal = self.acl.resolve(request.token)
        headers = self._blocking_query(request, lambda: self.catalog.services_index)
        tags = {}
        for _, record in self.catalog.instances(lambda view: True):
            tags.setdefault(record.value["Service"], set()).update(record.value["Tags"])
        readable = {name: sorted(values) for name, values in tags.items()
                    if self.acl.allowed(principal, "service", "read", name)}
        headers.update(self._filtered_header(request, len(readable) != len(tags)))
        return json_response(request, {name: readable[name] for name in sorted(readable)}, headers=headers)
