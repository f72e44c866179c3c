"""Specification of supervisor_meshx.ports."""

import random
import socket
import threading

import pytest

from supervisor_meshx.ports import PortAllocator, PortsExhausted, parse_port_range


def bindable(port):
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_range(size):
    """(low, high) of *size* ports in 40000-60000 that can all be bound right now."""
    for _ in range(100):
        low = random.randint(40000, 60000 - size)
        if all(bindable(port) for port in range(low, low + size)):
            return low, low + size - 1
    pytest.skip("no free port range found")


@pytest.fixture
def listen():
    """listen(port): keep a socket listening on 127.0.0.1:port for the test."""
    sockets = []

    def listen(port):
        sock = socket.socket()
        sockets.append(sock)
        sock.bind(("127.0.0.1", port))
        sock.listen()

    yield listen
    for sock in sockets:
        sock.close()


def test_service_ports_ascend_from_low():
    low, high = free_range(10)
    ports = PortAllocator(low=low, high=high)
    assert [ports.allocate_service() for _ in range(3)] == [low, low + 1, low + 2]


def test_upstream_ports_descend_from_high():
    low, high = free_range(10)
    ports = PortAllocator(low=low, high=high)
    assert [ports.allocate_upstream() for _ in range(3)] == [high, high - 1, high - 2]


def test_allocated_ports_are_held_until_released():
    low, high = free_range(10)
    ports = PortAllocator(low=low, high=high)
    service, upstream = ports.allocate_service(), ports.allocate_upstream()
    assert ports.held == frozenset({service, upstream})
    assert ports.is_held(service) and ports.is_held(upstream)
    ports.release(service)
    assert ports.held == frozenset({upstream}) and not ports.is_held(service)
    ports.release(service)  # releasing twice is harmless


def test_a_port_something_listens_on_is_skipped(listen):
    low, high = free_range(10)
    listen(low)
    listen(high)
    ports = PortAllocator(low=low, high=high)
    assert ports.allocate_service() == low + 1
    assert ports.allocate_upstream() == high - 1
    assert not ports.is_held(low) and not ports.is_held(high)


def test_held_ports_are_skipped_and_never_repeated():
    low, high = free_range(10)
    ports = PortAllocator(low=low, high=high)
    assert ports.hold(low + 1) is True
    assert ports.hold(low + 1) is False
    got = [ports.allocate_service() for _ in range(9)]
    assert sorted(got) == [p for p in range(low, high + 1) if p != low + 1]


def test_released_port_is_reused_only_after_wrapping_around():
    low, high = free_range(5)
    ports = PortAllocator(low=low, high=high)
    assert ports.allocate_service() == low
    assert ports.allocate_service() == low + 1
    ports.release(low)
    assert ports.allocate_service() == low + 2
    assert ports.allocate_service() == low + 3
    assert ports.allocate_service() == low + 4
    assert ports.allocate_service() == low  # wrapped around to the low end


def test_a_port_given_back_is_the_next_only_if_it_was_the_last_handed_out():
    low, high = free_range(5)
    ports = PortAllocator(low=low, high=high)
    first, second = ports.allocate_service(), ports.allocate_service()
    ports.give_back(first)  # not the last: released, reused only after wrapping around
    assert not ports.is_held(first)
    assert ports.allocate_service() == low + 2
    ports.give_back(low + 2)
    assert ports.allocate_service() == low + 2
    assert ports.held == frozenset({second, low + 2})


def test_cursors_meeting_send_both_sides_back_to_their_ends():
    low, high = free_range(6)
    ports = PortAllocator(low=low, high=high)
    assert [ports.allocate_service(), ports.allocate_upstream()] == [low, high]
    assert [ports.allocate_service(), ports.allocate_upstream()] == [low + 1, high - 1]
    for port in (low, low + 1, high, high - 1):
        ports.release(port)
    assert [ports.allocate_service(), ports.allocate_upstream()] == [low + 2, high - 2]
    # The cursors have met: both sides start over from their own ends.
    assert [ports.allocate_service(), ports.allocate_upstream()] == [low, high]


def test_a_side_takes_free_ports_from_the_other_end_before_giving_up():
    low, high = free_range(4)
    ports = PortAllocator(low=low, high=high)
    assert [ports.allocate_upstream() for _ in range(3)] == [high, high - 1, high - 2]
    ports.release(high)
    assert ports.allocate_service() == low
    assert ports.allocate_service() == high


def test_exhaustion_raises(listen):
    low, high = free_range(3)
    ports = PortAllocator(low=low, high=high)
    ports.hold(low)
    listen(low + 1)
    assert ports.allocate_upstream() == high
    with pytest.raises(PortsExhausted, match=f"{low}-{high} on 127.0.0.1"):
        ports.allocate_service()
    with pytest.raises(PortsExhausted):
        ports.allocate_upstream()
    ports.release(low)
    assert ports.allocate_upstream() == low


def test_hold_accepts_ports_outside_the_range_but_not_invalid_ones():
    low, high = free_range(2)
    ports = PortAllocator(low=low, high=high)
    assert ports.hold(80)
    for bad in (0, 65536, -1, True, "80", None):
        with pytest.raises(ValueError):
            ports.hold(bad)


def test_concurrent_allocations_are_all_distinct():
    low, high = free_range(60)
    ports = PortAllocator(low=low, high=high)
    results, start = [], threading.Barrier(12)

    def worker(allocate):
        start.wait()
        for _ in range(5):
            results.append(allocate())

    threads = [threading.Thread(target=worker, args=(ports.allocate_service if i % 2 else ports.allocate_upstream,))
               for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(low, high + 1))
    assert ports.held == frozenset(results)


@pytest.mark.parametrize("address", ["localhost", "127.0.0.300", ""])
def test_address_must_be_an_ip_literal(address):
    with pytest.raises(ValueError):
        PortAllocator(address=address)


@pytest.mark.parametrize("low, high", [(0, 10), (10, 65536), (20, 10), (1.5, 10)])
def test_constructor_rejects_bad_ranges(low, high):
    with pytest.raises(ValueError):
        PortAllocator(low=low, high=high)


@pytest.mark.parametrize("text, expected", [
    ("1024-65535", (1024, 65535)),
    (" 2000 - 3000 ", (2000, 3000)),
    ("1-1", (1, 1)),
    ("080-81", (80, 81)),
])
def test_parse_port_range(text, expected):
    assert parse_port_range(text) == expected


@pytest.mark.parametrize("text, why", [
    ("", "expected LOW-HIGH"),
    ("1024", "expected LOW-HIGH"),
    ("1024..65535", "expected LOW-HIGH"),
    ("a-b", "expected LOW-HIGH"),
    ("-5-10", "expected LOW-HIGH"),
    ("\u0661-\u0662", "expected LOW-HIGH"),
    (None, "expected LOW-HIGH"),
    ("3000-2000", "low port is above high port"),
    ("0-100", "invalid port 0"),
    ("1024-65536", "invalid port 65536"),
])
def test_parse_port_range_rejects_bad_text(text, why):
    with pytest.raises(ValueError, match=why):
        parse_port_range(text)
