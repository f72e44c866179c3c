"""/v1/agent/self: the agent's configuration, member and stats."""

from ..checks import OUTPUT_MAX_SIZE
from ..routing import json_response
from .base import Endpoints


VERSION = "1.20.0"


class AgentSelfEndpoint(Endpoints):
    def agent_self(self, request):
        principal = self.acl.resolve(request.token)
        self.acl.require(principal, "agent", "read", self.state.node_name)
        state, low_high = self.state, self.state.sidecar_port_range
        with state.lock:
            ttl_checks = sum(1 for check in state.checks.values() if check.is_ttl)
            counts = (len(state.services), len(state.checks))
        return json_response(request, {
            "Config": {"Datacenter": state.datacenter, "PrimaryDatacenter": state.datacenter,
                       "NodeName": state.node_name, "NodeID": self.state.node_id, "Revision": "double",
                       "Server": True, "Version": VERSION, "BuildDate": "2024-10-14T00:00:00Z"},
            "DebugConfig": {"ACLsEnabled": self.acl.enabled, "ACLResolverSettings": {
                "ACLDefaultPolicy": self.acl.header_value}, "ConnectEnabled": True,
                "ConnectSidecarMinPort": low_high[0], "ConnectSidecarMaxPort": low_high[1],
                "Datacenter": state.datacenter, "NodeName": state.node_name, "HTTPPort": self.http_port(),
                "GRPCPort": -1, "GRPCTLSPort": -1, "EnableRemoteScriptChecks": False,
                "CheckOutputMaxSize": OUTPUT_MAX_SIZE},
            "Coord": {"Vec": [0.0] * 8, "Error": 1.5, "Adjustment": 0.0, "Height": 1e-05},
            "Member": {"Name": state.node_name, "Addr": state.address, "Port": 8301,
                       "Tags": {"dc": state.datacenter, "role": "consul", "build": VERSION + ":double",
                                "id": self.state.node_id, "port": "8300", "vsn": "2", "vsn_max": "3", "vsn_min": "2"},
                       "Status": 1, "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
                       "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4},
            "Stats": {"agent": {"check_monitors": "0", "check_ttls": str(ttl_checks), "checks": str(counts[1]),
                                "services": str(counts[0])},
                      "build": {"prerelease": "", "revision": "double", "version": VERSION}},
            "Meta": {"consul-network-segment": "", "consul-version": VERSION},
        })
