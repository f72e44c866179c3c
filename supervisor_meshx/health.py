"""Health probes: a proxy that runs but no longer serves is as broken as one that exited.

Every ``proxy_health_interval`` seconds each RUNNING proxy of a mesh service is
probed off supervisord's loop: a TCP connect to its sidecar's public port, or
for a template whose ``health`` is ``envoy`` an HTTP GET of ``/ready`` on its
admin port.  While probes fail the service's TTL check is critical, with the
failing probe as its output; after ``proxy_health_failures`` failures in a row
the proxy is restarted (counted under cause ``health``, within
``max_proxy_restarts`` and the backoff).  A proxy is probed only once RUNNING,
that is after ``proxy_startsecs``.
"""
import http.client
import socket

KINDS = ("tcp", "envoy")
PROBE_TIMEOUT = 1.0  # seconds one probe may take


class HealthProbes:
    def __init__(self, loop, interval, failures, targets, on_change, on_unhealthy, count_failure=lambda: None):
        """``targets()``: (service_id, kind, address, port) to probe now, main thread;
        ``on_change(service_id)``: its health changed; ``on_unhealthy(service_id, problem)``:
        ``failures`` failed in a row; ``count_failure()``: one probe failed (for the metrics)."""
        self._count_failure = count_failure
        self._loop = loop
        self._interval = interval
        self._failures_needed = failures
        self._targets = targets
        self._on_change = on_change
        self._on_unhealthy = on_unhealthy
        self._failing = {}  # service id -> (failures in a row, what failed)
        self._stopped = False

    def start(self):
        if self._interval:
            self._loop.call_later(self._interval, self._tick)

    def stop(self):
        self._stopped = True

    def problem(self, service_id):
        """What the last probe of the service found wrong, or None."""
        failing = self._failing.get(service_id)
        return failing[1] if failing else None

    def _tick(self):
        if self._stopped:
            return
        targets = self._targets()
        future = self._loop.submit(probe_all, targets)
        future.add_done_callback(lambda f: self._loop.call_soon(lambda: self._probed(targets, f.result())))

    def _probed(self, targets, results):
        probed = {target[0] for target in targets}
        for service_id in [s for s in self._failing if s not in probed]:
            del self._failing[service_id]  # stopped, restarting or gone: probed again once RUNNING
        for (service_id, _kind, _address, _port), problem in zip(targets, results):
            before = self._failing.get(service_id)
            if problem is None:
                if before:
                    del self._failing[service_id]
                    self._on_change(service_id)
                continue
            self._count_failure()
            count = (before[0] if before else 0) + 1
            self._failing[service_id] = (count, problem)
            if not before:
                self._on_change(service_id)
            if count >= self._failures_needed:
                self._on_unhealthy(service_id, problem)
        if not self._stopped:
            self._loop.call_later(self._interval, self._tick)


def probe_all(targets):
    """Probe each (service_id, kind, address, port); None or what failed, in order.  Worker thread."""
    return [probe(kind, address, port) for _service_id, kind, address, port in targets]


def probe(kind, address, port):
    try:
        if kind == "envoy":
            connection = http.client.HTTPConnection(address, port, timeout=PROBE_TIMEOUT)
            try:
                connection.request("GET", "/ready")
                status = connection.getresponse().status
            finally:
                connection.close()
            return None if status == 200 else "envoy %s:%d/ready answered %d" % (address, port, status)
        with socket.create_connection((address, port), timeout=PROBE_TIMEOUT):
            return None
    except (OSError, http.client.HTTPException) as exc:
        return "%s %s:%d: %s" % ("envoy" if kind == "envoy" else "tcp", address, port,
                                 getattr(exc, "strerror", None) or type(exc).__name__)
