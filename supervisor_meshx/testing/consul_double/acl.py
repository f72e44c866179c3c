"""ACLs: token resolution and the permission checks of an agent with (or without) ACLs."""

import json
import uuid

from .errors import HTTPError


ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"


class Principal:
    def __init__(self, accessor, rules):
        self.accessor = accessor
        self.rules = rules


class AclPolicy:
    """Token resolution and the permission checks of a Consul agent with (or without) ACLs."""

    def __init__(self, default_policy=None, tokens=None):
        if default_policy not in (None, "allow", "deny"):
            raise ValueError("acl_default_policy must be None, 'allow' or 'deny'")
        self.default_policy = default_policy
        self.tokens = dict(tokens or {})

    @property
    def enabled(self):
        return self.default_policy is not None

    @property
    def header_value(self):
        return self.default_policy or "allow"

    def resolve(self, secret):
        """The principal for a token secret; None means ACLs are off (everything allowed)."""
        if not self.enabled:
            return None
        if not secret or secret == "anonymous":
            return Principal(ANONYMOUS_ACCESSOR, {})
        rules = self.tokens.get(secret)
        if rules is None:
            raise HTTPError(403, "ACL not found")
        return Principal(rules.get("accessor") or str(uuid.uuid5(uuid.NAMESPACE_OID, secret)), rules)

    def allowed(self, principal, resource, access, name=None):
        if principal is None or self.default_policy == "allow":
            return True
        rules = principal.rules
        if resource == "service":
            names = list(rules.get("service_write") or [])
            if access == "read":
                names += list(rules.get("service_read") or [])
            return any(self._matches(pattern, name) for pattern in names)
        if resource == "node":
            return bool(rules.get("node_write")) or (access == "read" and bool(rules.get("node_read")))
        if resource == "agent":
            return bool(rules.get("agent_write")) or (access == "read" and bool(rules.get("agent_read")))
        return False

    @staticmethod
    def _matches(pattern, name):
        if pattern == "*":
            return True
        if pattern.endswith("*"):
            return (name or "").startswith(pattern[:-1])
        return pattern == name

    def require(self, principal, resource, access, name=None):
        if not self.allowed(principal, resource, access, name):
            on = "" if name is None else " on %s" % json.dumps(name, ensure_ascii=False)
            raise HTTPError(403, "Permission denied: token with AccessorID '%s' lacks permission '%s:%s'%s"
                            % (principal.accessor, resource, access, on))
