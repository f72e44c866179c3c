"""What keeps a check's status up to date: TTL timers and the TCP and HTTP probes, on one clock per agent."""

import random
import socket
import time
import urllib.error
import urllib.request

from .checks import CRITICAL, OUTPUT_MAX_SIZE, PASSING, WARNING
from .deadline_scheduler import DeadlineScheduler
from .worker_pool import WorkerPool


class CheckClock:
    """What runs an agent's checks: one scheduler thread for the deadlines and a few threads for the probes,
    which block up to their timeout."""

    PROBE_THREADS = 32

    def __init__(self, name):
        self.scheduler = DeadlineScheduler(name + "-checks")
        self.probe_threads = WorkerPool(name + "-probe", self.PROBE_THREADS)

    def start(self):
        self.scheduler.start()

    def stop(self):
        self.scheduler.stop()
        self.probe_threads.stop()


class TtlTimer:
    """Marks a TTL check critical when no update came within its TTL (no re-arm: an update makes a new one)."""

    def __init__(self, state, check_id, ttl_seconds, clock):
        self._deadline = clock.scheduler.call_at(time.monotonic() + ttl_seconds,
                                                 lambda: state.expire_ttl(check_id, self))

    def stop(self):
        self._deadline.cancel()


class Prober:
    """Runs a probe every interval after a random stagger of at most one interval; the interval counts from
    the end of the previous probe."""

    def __init__(self, state, check_id, probe, interval_seconds, clock):
        self._state, self._check_id, self._probe = state, check_id, probe
        self._interval, self._clock = interval_seconds, clock
        self._stopped = False
        self._next = clock.scheduler.call_at(time.monotonic() + random.uniform(0, interval_seconds), self._due)

    def _due(self):
        self._clock.probe_threads.submit(self._run)

    def _run(self):
        if self._stopped:
            return
        status, output = self._probe()
        if self._stopped:
            return
        self._state.set_probe_result(self._check_id, self, status, output)
        self._next = self._clock.scheduler.call_at(time.monotonic() + self._interval, self._due)

    def stop(self):
        self._stopped = True
        self._next.cancel()


def _split_host_port(target):
    host, _, port = target.rpartition(":")
    return host.strip("[]"), port


def tcp_probe(target, timeout):
    def probe():
        host, port = _split_host_port(target)
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                return PASSING, "TCP connect %s: Success" % target
        except socket.timeout:
            return CRITICAL, "dial tcp %s: i/o timeout" % target
        except socket.gaierror:
            return CRITICAL, "dial tcp: lookup %s: no such host" % host
        except (OSError, ValueError) as exc:
            reason = (getattr(exc, "strerror", None) or str(exc)).lower()
            return CRITICAL, "dial tcp %s: connect: %s" % (target, reason)
    return probe


def http_probe(check, timeout):
    url, method = check.get("HTTP"), check.get("Method") or "GET"
    headers = {key: values[0] for key, values in (check.get("Header") or {}).items() if values}
    body = (check.get("Body") or "").encode() or None

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy from the environment

    def probe():
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with opener.open(request, timeout=timeout) as response:
                code, reason, text = response.status, response.reason, response.read(OUTPUT_MAX_SIZE)
        except urllib.error.HTTPError as exc:
            code, reason, text = exc.code, exc.reason, exc.read(OUTPUT_MAX_SIZE)
        except Exception as exc:  # connection errors of every kind
            return CRITICAL, '%s "%s": %s' % (method.capitalize(), url, getattr(exc, "reason", exc))
        output = "HTTP %s %s: %d %s Output: %s" % (method, url, code, reason, text.decode("utf-8", "replace"))
        if 200 <= code < 300:
            return PASSING, output
        return (WARNING if code == 429 else CRITICAL), output
    return probe
