"""A stateful Consul agent test double speaking real HTTP on 127.0.0.1.

It follows /work/shared/consul-agent-api.md (the behaviour of a Consul CE 1.16-1.21 agent): status codes,
plain-text error bodies, Go-style strict JSON decoding, sidecar expansion, check runners (TTL timers, TCP and
HTTP probes, alias checks), the health endpoints and ACLs.  Standard library only.

Behaviours of a real deployment it can be told to show (knobs): an agent whose cluster has no leader yet
refuses registrations with ``500 could not retrieve initial service_defaults config for service "<id>": ...``
(``not_ready_for``); answers that come too late for the client though the request was applied
(``reply_latency``); slow handling (``latency``); injected error answers (``inject_errors``); a restart
without data (``wipe``).  Not modelled here because it is not the agent's doing: ``consul connect proxy
-sidecar-for`` matches service ids case-insensitively ("More than one sidecar proxy registered"), which is
why the plugin refuses ids that differ only in case.

    with ConsulDouble() as agent:
        requests.put(agent.url + "/v1/agent/service/register", json={"Name": "web"})
"""

from .agent_state import AgentState
from .cluster import ConsulCluster
from .double import ConsulDouble
from .request_log import LoggedRequest

__all__ = ["AgentState", "ConsulCluster", "ConsulDouble", "LoggedRequest"]
