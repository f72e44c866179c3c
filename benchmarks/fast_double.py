"""Make the Consul double's alias checks incremental, so the double scales to 1000 services.

``AgentState._refresh_aliases`` runs after every state change (each TTL
update) and recomputes every alias check by sorting all checks: with N
services that is N sidecar alias checks x 3N checks per change, O(N^2 log N).
At a few hundred services the double then spends its time there, under its
one lock, and a benchmark of the plugin measures the double instead.

``install()`` (called in the double's own process by ``benchmarks.consul``)
replaces it with an equivalent that recomputes only the aliases whose target
service changed (all of them after any structural change: a service or check
added or removed), from an index of checks by service.  Results are the same
as the original's: aliases of aliases still settle in at most 5 rounds.
The double's module itself is not changed.

To check the equivalence against the double's own tests:
    python -m pytest -p benchmarks.fast_double tests/test_consul_double.py tests/test_services.py
"""
import functools

from supervisor_meshx.testing import consul_double as cd

ROUNDS = 5


def install(state_class=None):
    state_class = state_class or cd.AgentState
    if getattr(state_class, "_bench_incremental", False):
        return
    original_set_status = state_class._set_status
    original_alias_result = state_class._alias_result

    def set_status(check, status, output):
        original_set_status(check, status, output)
        state = getattr(check, "_bench_state", None)
        if state is not None:
            _init(state)
            state._bench_dirty.add(check.service_id)

    def structural(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            self._bench_all_dirty = True
            try:
                return method(self, *args, **kwargs)
            finally:
                self._bench_all_dirty = True
        return wrapper

    def put_check(self, check, _original=state_class._put_check):
        check._bench_state = self
        return _original(self, check)

    def refresh_aliases(self):
        _init(self)
        for _ in range(ROUNDS):
            if self._bench_all_dirty:
                _reindex(self)
                targets = list(self._bench_aliases)
            elif self._bench_dirty:
                if "" in self._bench_dirty:  # a node-level check: every alias may move
                    targets = list(self._bench_aliases)
                else:
                    targets = [a for sid in self._bench_dirty for a in self._bench_alias_by_target.get(sid, ())]
                    targets += self._bench_alias_by_target.get("", [])  # node aliases see every check
            else:
                return
            self._bench_dirty = set()
            self._bench_all_dirty = False
            moved = False
            for check in targets:
                if self.checks.get(check.id) is not check:
                    continue
                status, output = alias_result(self, check.check_type)
                if (check.status, check.output) != (status, output):
                    self._set_status(check, status, output)
                    moved = True
            if not moved:
                return

    def alias_result(self, check_type):
        node, service_id = check_type.get("AliasNode", ""), check_type.get("AliasService", "")
        if not service_id or (node and node != self.node_name):
            return original_alias_result(self, check_type)
        status, output = cd.PASSING, "No checks found."
        candidates = self._bench_by_service.get(service_id, []) + self._bench_by_service.get("", [])
        for check in sorted(candidates, key=lambda c: c.id):
            if check.status in (cd.CRITICAL, cd.WARNING):
                status, output = check.status, 'Aliased check "%s" failing: %s' % (check.name, check.output)
                if check.status == cd.CRITICAL:
                    break
            elif status == cd.PASSING:
                output = "All checks passing."
        if service_id not in self.services:
            return cd.CRITICAL, "Service %s could not be found on node %s" % (service_id, node)
        return status, output

    state_class._set_status = staticmethod(set_status)
    state_class._put_check = put_check
    for name in ("add_service", "remove_service", "add_check", "remove_check", "enable_maintenance", "wipe"):
        setattr(state_class, name, structural(getattr(state_class, name)))
    state_class._refresh_aliases = refresh_aliases
    state_class._bench_incremental = True


def _init(state):
    if not hasattr(state, "_bench_dirty"):
        state._bench_dirty, state._bench_all_dirty = set(), True


def _reindex(state):
    by_service, aliases, by_target = {}, [], {}
    for check in state.checks.values():
        check._bench_state = state  # also checks put into the dict directly (maintenance)
        by_service.setdefault(check.service_id, []).append(check)
        if check.type == "alias":
            aliases.append(check)
            node = check.check_type.get("AliasNode", "")
            target = check.check_type.get("AliasService", "")
            by_target.setdefault(target if not node or node == state.node_name else "", []).append(check)
    state._bench_by_service, state._bench_aliases, state._bench_alias_by_target = by_service, aliases, by_target


def pytest_configure(config):
    """``-p benchmarks.fast_double``: run a test session with the incremental version installed."""
    install()
