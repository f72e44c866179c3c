"""Prometheus metrics of the proxy fleet, written with prometheus_client.

Events are counted as they happen (agent calls and their latency, TTL
updates, health probe failures, reconciler repairs); the state of the fleet
(services, proxies by state, restarts by cause, re-registrations) is read
from the plugin when the metrics are collected, on supervisord's main loop.
Each plugin instance has its own registry: counters start again at a reload,
as a restarted process's would.
"""
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily


class Metrics:
    def __init__(self, fleet):
        """``fleet()``: (services owned, {proxy state: count}, {restart cause: count}, re-registrations)."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.agent_calls = Counter("meshx_agent_calls", "Calls to the local Consul agent, by outcome",
                                   ["outcome"], registry=self.registry)
        self.agent_latency = Histogram("meshx_agent_call_seconds", "Time the local Consul agent took to answer",
                                       registry=self.registry,
                                       buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.ttl_updates = Counter("meshx_ttl_updates", "TTL check updates, by outcome", ["outcome"],
                                   registry=self.registry)
        self.health_failures = Counter("meshx_health_probe_failures", "Failed health probes of proxies",
                                       registry=self.registry)
        self.repairs = Counter("meshx_reconciler_repairs",
                               "Differences the reconciler fixed in the agent (registrations sent again, "
                               "leftovers deregistered)", registry=self.registry)
        self.registry.register(_Fleet(fleet))

    def agent_call(self, outcome, seconds):
        """One agent call: ``outcome`` ok, error (an error status) or unavailable.  Any thread."""
        self.agent_calls.labels(outcome).inc()
        self.agent_latency.observe(seconds)

    def text(self):
        """The exposition text; main thread."""
        return generate_latest(self.registry).decode()


class _Fleet:
    def __init__(self, fleet):
        self._fleet = fleet

    def describe(self):
        return []

    def collect(self):
        services, proxies, restarts, reregistrations = self._fleet()
        yield GaugeMetricFamily("meshx_services", "Mesh services owned by this supervisord", value=services)
        by_state = GaugeMetricFamily("meshx_proxies", "Proxies, by supervisord state", labels=["state"])
        for state, count in sorted(proxies.items()):
            by_state.add_metric([state], count)
        yield by_state
        by_cause = GaugeMetricFamily("meshx_proxy_restarts",
                                     "Automatic proxy restarts since each proxy's last meshx restart, by cause",
                                     labels=["cause"])
        for cause, count in sorted(restarts.items()):
            by_cause.add_metric([cause], count)
        yield by_cause
        yield GaugeMetricFamily("meshx_reregistrations", "Times the agent had lost a service and it was "
                                "registered again", value=reregistrations)
