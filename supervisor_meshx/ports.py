"""TCP endpoint allocation, after MeshxConsul's GenTcpPort.

Service endpoints take ports upward from the low end of the range, upstream
endpoints downward from the high end.  Each side keeps a cursor just past the
last port it handed out; when the cursors meet (or one runs off the range) both
start over from their ends.  So a released port is not handed out again until
the allocator has gone all the way round, which keeps a restarted service from
being reached by a client that still has the old endpoint.
"""

import ipaddress
import itertools
import re
import socket
import threading

MIN_PORT = 1
MAX_PORT = 65535


class PortsExhausted(Exception):
    """Every port in the range is held or cannot be bound."""


def parse_port_range(text):
    """Parse "LOW-HIGH" (e.g. "1024-65535") into a (low, high) tuple of ints.

    Raises ValueError for malformed text, low > high, or ports outside 1..65535.
    """
    match = re.fullmatch(r"\s*([0-9]+)\s*-\s*([0-9]+)\s*", text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"invalid port range {text!r}: expected LOW-HIGH, e.g. 1024-65535")
    low, high = int(match.group(1)), int(match.group(2))
    _check_range(low, high)
    return low, high


def _check_port(port):
    if isinstance(port, bool) or not isinstance(port, int) or not MIN_PORT <= port <= MAX_PORT:
        raise ValueError(f"invalid port {port!r}: expected an integer in {MIN_PORT}..{MAX_PORT}")


def _check_range(low, high):
    _check_port(low)
    _check_port(high)
    if low > high:
        raise ValueError(f"invalid port range {low}-{high}: low port is above high port")


class PortAllocator:
    """Hands out TCP ports on one local address; safe to use from several threads."""

    def __init__(self, address="127.0.0.1", low=1024, high=65535):
        self._family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
        _check_range(low, high)
        self.address, self.low, self.high = address, low, high
        self._held = set()
        self._lock = threading.Lock()
        self._service_next, self._upstream_next = low, high

    def allocate_service(self):
        """Hold and return the next free port going upward (a service endpoint)."""
        with self._lock:
            start = self._service_next
            upward = itertools.chain(range(start, self.high + 1), range(self.low, start))
            port = self._first_free(upward)
            self._service_next = port + 1
            self._restart_cursors_if_met()
            return port

    def allocate_upstream(self):
        """Hold and return the next free port going downward (an upstream endpoint)."""
        with self._lock:
            start = self._upstream_next
            downward = itertools.chain(range(start, self.low - 1, -1), range(self.high, start, -1))
            port = self._first_free(downward)
            self._upstream_next = port - 1
            self._restart_cursors_if_met()
            return port

    def hold(self, port):
        """Mark *port* as handed out, so it is never allocated until released.

        For endpoints restored from saved state or chosen by the caller; the
        port may lie outside the allocation range.  Returns False if it was
        already held.
        """
        _check_port(port)
        with self._lock:
            if port in self._held:
                return False
            self._held.add(port)
            return True

    def release(self, port):
        """Make *port* available again (it is reused only after a full round)."""
        with self._lock:
            self._held.discard(port)

    def give_back(self, port):
        """Release a service port nobody was ever told of: if it was the last handed out, it is
        the next one again."""
        with self._lock:
            self._held.discard(port)
            if self._service_next == port + 1:
                self._service_next = port

    def is_held(self, port):
        """True if *port* is currently handed out."""
        with self._lock:
            return port in self._held

    @property
    def held(self):
        """A snapshot of the ports currently handed out."""
        with self._lock:
            return frozenset(self._held)

    def _first_free(self, candidates):
        for port in candidates:
            if port not in self._held and self._bindable(port):
                self._held.add(port)
                return port
        raise PortsExhausted(f"no free TCP port in {self.low}-{self.high} on {self.address}")

    def _bindable(self, port):
        # No SO_REUSEADDR: a port with connections lingering in TIME_WAIT is
        # skipped too, which is what we want for a fresh endpoint.
        with socket.socket(self._family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((self.address, port))
            except OSError:
                return False
        return True

    def _restart_cursors_if_met(self):
        if self._service_next > self._upstream_next:
            self._service_next, self._upstream_next = self.low, self.high


class Ports:
    """The plugin's allocators: endpoints (and upstreams), sidecars' public ports, proxies' admin ports."""

    def __init__(self, endpoint, sidecar, admin):
        self.endpoint, self.sidecar, self.admin = endpoint, sidecar, admin

    def held_by(self, record):
        """(allocator, port) for every port a service holds."""
        held = [(self.endpoint, port) for port in record.ports()]
        held += [(allocator, port) for allocator, port in ((self.sidecar, record.sidecar_port),
                                                          (self.admin, record.admin_port)) if port]
        return held
