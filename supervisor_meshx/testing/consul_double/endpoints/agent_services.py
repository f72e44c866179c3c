"""/v1/agent/service/* and /v1/agent/services: registration (with sidecar expansion), deregistration,
maintenance, listing and the single-service GET with its blocking ?hash."""

import json
import time

from ..checks import check_types
from ..errors import HTTPError, bad_request
from ..go_json import sorted_keys
from ..go_strconv import parse_bool
from ..request_bodies import SERVICE_DEFINITION
from ..routing import Response, json_response
from ..validation import multierror, validate_meta, validate_node_service, validate_weights
from .base import Endpoints


class AgentServiceEndpoints(Endpoints):
    def register_service(self, request):
        definition = self._decode(request, SERVICE_DEFINITION)
        principal = self._validate_service(request, definition)
        checks = check_types(definition, "Invalid check: ")
        nested = (definition.get("Connect") or {}).get("SidecarService")
        sidecar_checks = None if nested is None else check_types(nested, "Invalid check in sidecar_service: ")
        self._require_service_write(principal, definition)
        sidecar = None if nested is None else self._sidecar(request, definition, nested)

        flag = request.query.get("replace-existing-checks")
        replace = flag in ("", "true")  # present, and empty or exactly "true"
        token = definition.get("Token") or request.token
        view = self.builder.view(definition)
        with self.state.lock:
            self.state.add_service(view, checks, token, replace)
            if sidecar is not None:
                # a failure from here on leaves the parent registered, as Consul does
                if not sidecar["Port"]:
                    sidecar["Port"] = self.state.sidecar_port(sidecar["ID"])
                sidecar_view = self.builder.view(sidecar)
                if not sidecar_checks:
                    sidecar_checks = self.builder.default_sidecar_checks(sidecar_view, view["ID"])
                self.state.add_service(sidecar_view, sidecar_checks, nested.get("Token") or token, replace,
                                       sidecar_of=view["ID"])
        return Response()

    def _validate_service(self, request, definition):
        """Steps 2-7 of the registration order; returns the caller's principal."""
        if not definition.get("Name"):
            raise bad_request("Missing service name")
        if definition.get("Address") in ("0.0.0.0", "::", "[::]"):
            raise bad_request("Invalid service address")
        principal = self.acl.resolve(request.token)
        problem = validate_weights(definition.get("Weights"))
        if problem:
            raise bad_request(problem)
        problem = validate_meta(definition.get("Meta") or {})
        if problem:
            raise bad_request("Invalid Service Meta: " + problem)
        errors = validate_node_service(definition)
        if errors:
            raise bad_request("Validation failed: " + multierror(errors))
        return principal

    def _sidecar(self, request, definition, nested):
        """The expanded sidecar definition, validated and authorised (its own Token if it has one)."""
        sidecar = self.builder.sidecar_definition(definition, nested)
        problem = validate_meta(sidecar.get("Meta") or {})
        if problem:
            raise bad_request("Invalid SidecarService: " + problem)
        errors = validate_node_service(sidecar, port_will_be_assigned=not sidecar["Port"])
        if errors:
            raise bad_request("Failed Validation: " + multierror(errors))
        self._require_service_write(self.acl.resolve(nested.get("Token") or request.token), sidecar)
        return sidecar

    def _require_service_write(self, principal, definition):
        self.acl.require(principal, "service", "write", definition["Name"])
        if definition.get("Kind") == "connect-proxy":
            destination = (definition.get("Proxy") or {}).get("DestinationServiceName", "")
            self.acl.require(principal, "service", "write", destination)

    def deregister_service(self, request, service_id):
        principal = self.acl.resolve(request.token)
        service = self.state.services.get(service_id)
        if service is None:
            raise HTTPError(404, 'Unknown service ID "%s". Ensure that the service ID is passed, '
                                 'not the service name.' % service_id)
        self.acl.require(principal, "service", "write", service.name)
        self.state.remove_service(service_id)
        return Response()

    def service_maintenance(self, request, service_id):
        if not service_id:
            raise bad_request("Missing service ID")
        if not request.has("enable"):
            raise bad_request("Missing value for enable")
        enable = parse_bool(request.query["enable"])
        if enable is None:
            raise bad_request("Invalid value for enable: %s" % json.dumps(request.query["enable"]))
        principal = self.acl.resolve(request.token)
        service = self.state.services.get(service_id)
        if service is None:
            raise HTTPError(404, 'Unknown service ID "%s"' % service_id)
        self.acl.require(principal, "service", "write", service.name)
        if enable:
            self.state.enable_maintenance(service_id, request.query.get("reason", ""))
        else:
            self.state.disable_maintenance(service_id)
        return Response()

    def services(self, request):
        principal = self.acl.resolve(request.token)
        condition = self._filter(request)
        with self.state.lock:
            views = [service.view for service in self.state.services.values()]
        readable = [view for view in views if self.acl.allowed(principal, "service", "read", view["Service"])]
        headers = self._filtered_header(request, len(readable) != len(views))
        result = {view["ID"]: view for view in readable if condition is None or condition.matches(view)}
        return json_response(request, sorted_keys(result), headers=headers)

    def service(self, request, service_id):
        principal = self.acl.resolve(request.token)
        wait = self._wait(request)
        service = self.state.services.get(service_id)
        if service is None:
            raise HTTPError(404, "unknown service ID: " + service_id)
        self.acl.require(principal, "service", "read", service.name)
        if request.query.get("hash"):
            self.state.wait_for_change(service_id, request.query["hash"], time.monotonic() + wait, self.serving)
            service = self.state.services.get(service_id, service)
        content_hash = service.content_hash()
        return json_response(request, with_content_hash(service.view, content_hash),
                             headers={"X-Consul-ContentHash": content_hash})


def with_content_hash(view, content_hash):
    """AgentService field order puts ContentHash right after EnableTagOverride."""
    out = {}
    for key, value in view.items():
        out[key] = value
        if key == "EnableTagOverride":
            out["ContentHash"] = content_hash
    return out
