"""AgentAPI: the agent's HTTP endpoints (its own /v1/agent ones, and the catalog and health ones it answers from
the servers' catalog), one group per file under endpoints/, and their routes."""

from .checks import CRITICAL, PASSING, WARNING
from .endpoints.agent_checks import AgentCheckEndpoints
from .endpoints.agent_health import AgentHealthEndpoints
from .endpoints.agent_self import AgentSelfEndpoint
from .endpoints.agent_services import AgentServiceEndpoints
from .endpoints.catalog import CatalogEndpoints
from .endpoints.health import HealthEndpoints


class AgentAPI(AgentServiceEndpoints, AgentCheckEndpoints, AgentHealthEndpoints, AgentSelfEndpoint, CatalogEndpoints,
               HealthEndpoints):
    """The endpoints over an AgentState and a Catalog, with Consul's validation and ACL order."""

    def routes(self):
        """(path, method, handler); a path ending in "/" is a prefix whose tail is the handler's argument."""
        return [
            ("/v1/agent/self", "GET", self.agent_self),
            ("/v1/agent/services", "GET", self.services),
            ("/v1/agent/service/", "GET", self.service),
            ("/v1/agent/service/register", "PUT", self.register_service),
            ("/v1/agent/service/deregister/", "PUT", self.deregister_service),
            ("/v1/agent/service/maintenance/", "PUT", self.service_maintenance),
            ("/v1/agent/checks", "GET", self.checks),
            ("/v1/agent/check/register", "PUT", self.register_check),
            ("/v1/agent/check/deregister/", "PUT", self.deregister_check),
            ("/v1/agent/check/pass/", "PUT", lambda r, i: self.ttl_status(r, i, PASSING)),
            ("/v1/agent/check/warn/", "PUT", lambda r, i: self.ttl_status(r, i, WARNING)),
            ("/v1/agent/check/fail/", "PUT", lambda r, i: self.ttl_status(r, i, CRITICAL)),
            ("/v1/agent/check/update/", "PUT", self.update_check),
            ("/v1/agent/health/service/id/", "GET", self.health_by_id),
            ("/v1/agent/health/service/name/", "GET", self.health_by_name),
            ("/v1/catalog/services", "GET", self.catalog_services),
            ("/v1/catalog/service/", "GET", self.catalog_service),
            ("/v1/health/service/", "GET", self.health_service),
            ("/v1/health/connect/", "GET", self.health_connect),
        ]
