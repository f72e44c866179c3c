"""/v1/agent/check/* and /v1/agent/checks: check registration, deregistration, TTL updates and listing."""

from ..checks import CHECK_STATUSES, CRITICAL, CheckType
from ..errors import HTTPError, bad_request
from ..go_json import sorted_keys
from ..request_bodies import CHECK_DEFINITION, CHECK_UPDATE
from ..routing import Response, json_response
from .base import Endpoints


class AgentCheckEndpoints(Endpoints):
    def checks(self, request):
        principal = self.acl.resolve(request.token)
        condition = self._filter(request)
        with self.state.lock:
            checks = list(self.state.checks.values())
            views = [check.view(self.state.node_name) for check in checks]
        readable = [view for check, view in zip(checks, views) if self._can_read_check(principal, check)]
        headers = self._filtered_header(request, len(readable) != len(views))
        result = {view["CheckID"]: view for view in readable if condition is None or condition.matches(view)}
        return json_response(request, sorted_keys(result), headers=headers)

    def _can_read_check(self, principal, check):
        if check.service_id:
            return self.acl.allowed(principal, "service", "read", check.service_name)
        return self.acl.allowed(principal, "node", "read", self.state.node_name)

    def _require_check_write(self, principal, check):
        if check.service_id:
            self.acl.require(principal, "service", "write", check.service_name)
        else:
            self.acl.require(principal, "node", "write", self.state.node_name)

    def register_check(self, request):
        definition = self._decode(request, CHECK_DEFINITION)
        if not definition.get("Name"):
            raise bad_request("Missing check name")
        status = definition.get("Status", "")
        if status and status not in CHECK_STATUSES:
            raise bad_request("Bad check status")
        principal = self.acl.resolve(request.token)
        check_type = CheckType(definition)
        problem = check_type.validate()
        if problem:
            raise bad_request("Invalid check: " + problem)
        service_id = definition.get("ServiceID", "")
        service = self.state.services.get(service_id) if service_id else None
        if service_id and service is None:
            raise HTTPError(404, 'ServiceID "%s" does not exist' % service_id)
        if service is not None:
            self.acl.require(principal, "service", "write", service.name)
        else:
            self.acl.require(principal, "node", "write", self.state.node_name)
        self.state.add_check(definition.get("ID") or definition["Name"], definition["Name"], check_type,
                             status or CRITICAL, service, definition.get("Notes", ""))
        return Response()

    def deregister_check(self, request, check_id):
        principal = self.acl.resolve(request.token)
        check = self._known_check(check_id)
        self._require_check_write(principal, check)
        self.state.remove_check(check_id)
        return Response()

    def _known_check(self, check_id):
        check = self.state.checks.get(check_id)
        if check is None:
            raise HTTPError(404, 'Unknown check ID "%s". Ensure that the check ID is passed, '
                                 'not the check name.' % check_id)
        return check

    def ttl_status(self, request, check_id, status):
        return self._set_ttl(request, check_id, status, request.query.get("note", ""))

    def update_check(self, request, check_id):
        update = self._decode(request, CHECK_UPDATE)
        status = update.get("Status", "")
        if status not in CHECK_STATUSES:
            raise bad_request("Invalid check status: '%s'" % status)
        return self._set_ttl(request, check_id, status, update.get("Output", ""))

    def _set_ttl(self, request, check_id, status, output):
        principal = self.acl.resolve(request.token)
        with self.state.lock:  # a deregistration in between must give 404, not a KeyError
            check = self._known_check(check_id)
            self._require_check_write(principal, check)
            if not check.is_ttl:
                raise HTTPError(500, 'CheckID "%s" does not have associated TTL' % check_id)
            self.state.update_ttl(check_id, status, output)
        return Response()
