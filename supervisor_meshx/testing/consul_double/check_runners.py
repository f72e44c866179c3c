"""What keeps a check's status up to date: TTL timers and the TCP and HTTP probes."""

import random
import socket
import threading
import urllib.error
import urllib.request

from .checks import CRITICAL, OUTPUT_MAX_SIZE, PASSING, WARNING


class TtlTimer:
    """Marks a TTL check critical when no update came within its TTL (no re-arm)."""

    def __init__(self, state, check_id, ttl_seconds):
        self._timer = threading.Timer(ttl_seconds, state.expire_ttl, args=(check_id, self))
        self._timer.daemon = True
        self._timer.start()

    def stop(self):
        self._timer.cancel()


class Prober:
    """Runs a probe every interval after a random stagger of at most one interval."""

    def __init__(self, state, check_id, probe, interval_seconds):
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(state, check_id, probe, interval_seconds),
                                        name="consul-double-probe-" + check_id, daemon=True)
        self._thread.start()

    def _run(self, state, check_id, probe, interval):
        delay = random.uniform(0, interval)
        while not self._stopped.wait(delay):
            status, output = probe()
            if self._stopped.is_set():
                return
            state.set_probe_result(check_id, self, status, output)
            delay = interval

    def stop(self):
        self._stopped.set()


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
