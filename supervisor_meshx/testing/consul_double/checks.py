"""Health checks: statuses, the classification and validation of a check definition, and a check as the agent
holds it."""

import time

from .errors import bad_request
from .go_duration import GoDuration


PASSING, WARNING, CRITICAL, MAINTENANCE = "passing", "warning", "critical", "maintenance"
CHECK_STATUSES = (PASSING, WARNING, CRITICAL)
OUTPUT_MAX_SIZE = 4096
PROXY_KINDS = ("connect-proxy", "mesh-gateway", "terminating-gateway", "ingress-gateway", "api-gateway")
MAINTENANCE_CHECK_PREFIX = "_service_maintenance:"
NODE_MAINTENANCE_CHECK = "_node_maintenance"
DEFAULT_MAINTENANCE_REASON = ("Maintenance mode is enabled for this service, but no reason was provided. "
                              "This is a default message.")


class CheckType:
    """Classification and validation of one decoded check definition (structs.CheckType)."""

    INTERVAL_TYPES = ("ScriptArgs", "HTTP", "TCP", "UDP", "GRPC", "H2PING", "OSService")

    def __init__(self, fields):
        self.fields = fields

    def get(self, name, default=None):
        return self.fields.get(name, default)

    @property
    def interval_check(self):
        return any(self.fields.get(name) for name in self.INTERVAL_TYPES)

    @property
    def alias(self):
        return bool(self.get("AliasService") or self.get("AliasNode"))

    def validate(self):
        interval, ttl = self.get("Interval", 0), self.get("TTL", 0)
        if interval > 0 and ttl > 0:
            return "Interval and TTL cannot both be specified"
        if self.interval_check and interval <= 0:
            return "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"
        if self.alias:
            if ttl > 0:
                return "TTL must be not be set for Alias checks"
            if interval > 0:
                return "Interval cannot be set for Alias checks"
        elif not self.interval_check and ttl <= 0:
            return "TTL must be > 0 for TTL checks"
        if self.get("OutputMaxSize", 0) < 0:
            return "MaxOutputMaxSize must be positive"
        if self.get("FailuresBeforeWarning", 0) > self.get("FailuresBeforeCritical", 0):
            return "FailuresBeforeWarning can't be higher than FailuresBeforeCritical"
        return None

    @property
    def type(self):
        interval = self.get("Interval", 0) > 0
        if self.get("GRPC") and interval:
            return "grpc"
        if self.get("HTTP") and interval:
            return "http"
        if self.get("TTL", 0) > 0:
            return "ttl"
        if self.get("TCP") and interval:
            return "tcp"
        if self.get("UDP") and interval:
            return "udp"
        if self.alias:
            return "alias"
        if self.get("DockerContainerID") and self.get("ScriptArgs") and interval:
            return "docker"
        if self.get("ScriptArgs") and interval:
            return "script"
        if self.get("H2PING") and interval:
            return "h2ping"
        if self.get("OSService") and interval:
            return "os_service"
        return ""


def check_types(definition, prefix):
    """ServiceDefinition.CheckTypes() and the status check after it; raises the 400."""
    raw = []
    if definition.get("Check"):
        raw.append(definition["Check"])
    raw.extend(definition.get("Checks") or [])
    checks = [CheckType(fields) for fields in raw]
    for check in checks:
        problem = check.validate()
        if problem:
            raise bad_request(prefix + problem)
    for check in checks:
        if check.get("Status") and check.get("Status") not in CHECK_STATUSES:
            raise bad_request("Status for checks must 'passing', 'warning', 'critical'")
    return checks


class LocalCheck:
    def __init__(self, check_id, name, check_type, status, service=None, notes="", output=""):
        self.id = check_id
        self.name = name
        self.check_type = check_type  # CheckType, or None for maintenance checks
        self.status = status
        self.output = output
        self.notes = notes
        self.service_id = service.id if service else ""
        self.service_name = service.name if service else ""
        self.service_tags = list(service.view["Tags"]) if service else []
        self.type = check_type.type if check_type else "maintenance"
        self.runner = None
        self.order = 0  # where the agent's table of checks has it: kept when the check is registered again
        self.last_ttl_output = ""
        self.critical_since = time.monotonic() if status == CRITICAL else None

    @property
    def is_ttl(self):
        return self.type == "ttl"

    def view(self, node):
        fields = self.check_type.fields if self.check_type else {}
        return {"Node": node, "CheckID": self.id, "Name": self.name, "Status": self.status, "Notes": self.notes,
                "Output": self.output, "ServiceID": self.service_id, "ServiceName": self.service_name,
                "ServiceTags": list(self.service_tags), "Type": self.type,
                "Interval": GoDuration.format(fields.get("Interval", 0)) if self.check_type else "",
                "Timeout": GoDuration.format(fields.get("Timeout", 0)) if self.check_type else "",
                "ExposedPort": 0, "Definition": {}, "CreateIndex": 0, "ModifyIndex": 0}

    def health_view(self, node):
        # the health endpoint converts to api.HealthCheck: Type and Definition are not filled in
        return {"Node": node, "CheckID": self.id, "Name": self.name, "Status": self.status, "Notes": self.notes,
                "Output": self.output, "ServiceID": self.service_id, "ServiceName": self.service_name,
                "ServiceTags": list(self.service_tags), "Type": "", "ExposedPort": 0,
                "Definition": {"Interval": "0s", "Timeout": "0s", "DeregisterCriticalServiceAfter": "0s",
                               "HTTP": "", "Header": None, "Method": "", "Body": "", "TLSServerName": "",
                               "TLSSkipVerify": False, "TCP": "", "TCPUseTLS": False, "UDP": "", "GRPC": "",
                               "OSService": "", "GRPCUseTLS": False},
                "CreateIndex": 0, "ModifyIndex": 0}


def truncate_output(output):
    data = output.encode("utf-8")
    if len(data) <= OUTPUT_MAX_SIZE:
        return output
    return "%s ... (captured %d of %d bytes)" % (data[:OUTPUT_MAX_SIZE].decode("utf-8", "ignore"),
                                                OUTPUT_MAX_SIZE, len(data))
