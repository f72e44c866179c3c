"""The plugin's queued work on supervisord's thread gives way to supervisord's own clients.

No supervisord here: MainLoop runs its queued calls when its pipe wakes
supervisord's loop, and these tests run them the same way, with a socket in
supervisord's socket map standing for one of its HTTP channels.
"""
import os
import select
import socket
import time

import pytest
from supervisor.medusa import asyncore_25 as asyncore

from supervisor_meshx.mainloop import CLIENTS_FIRST_WAIT, MainLoop


@pytest.fixture
def loop():
    errors = []
    loop = MainLoop(errors.append)
    loop.attach()
    yield loop
    loop.detach()
    assert errors == []


class Client:
    """A connection to supervisord: what the client sends waits in supervisord's socket map
    (MainLoop looks only at the descriptor) until supervisord serves it."""

    def __init__(self):
        self.theirs, self.ours = socket.socketpair()
        asyncore.socket_map[self.ours.fileno()] = self.ours

    def send(self, data):
        self.theirs.sendall(data)

    def served(self):
        self.ours.recv(65536)

    def close(self):
        del asyncore.socket_map[self.ours.fileno()]
        self.theirs.close()
        self.ours.close()


@pytest.fixture
def client():
    client = Client()
    yield client
    client.close()


def _woken(loop):
    return bool(select.select([loop._pipe.read_fd], [], [], 0)[0])


def _drain(loop):
    try:
        while os.read(loop._pipe.read_fd, 4096):
            pass
    except BlockingIOError:
        pass
    loop._pipe._written = False


def test_queued_calls_run_together_when_no_client_waits(loop, client):
    ran = []
    for n in range(3):
        loop.call_soon(lambda n=n: ran.append(n))
    _drain(loop)
    loop.run_pending()
    assert ran == [0, 1, 2]
    assert not _woken(loop)


def test_queued_calls_wait_for_a_waiting_client_then_run_in_order(loop, client):
    ran = []
    for n in range(3):
        loop.call_soon(lambda n=n: ran.append(n))
    _drain(loop)
    client.send(b"POST /RPC2 HTTP/1.1\r\n")
    began = time.monotonic()
    loop.run_pending()
    assert ran == []
    assert _woken(loop), "the loop must wake again for the calls left"

    deadline = time.monotonic() + 5.0
    while not ran and time.monotonic() < deadline:
        loop.run_pending()  # the client is still not served: the calls wait, for a while only
    assert ran, "queued calls must not wait for supervisord's clients for ever"
    assert time.monotonic() - began >= CLIENTS_FIRST_WAIT

    while len(ran) < 3 and time.monotonic() < deadline:
        loop.run_pending()
    assert ran == [0, 1, 2]


def test_calls_left_for_the_pass_end_wait_for_a_waiting_client_too(loop, client):
    ran = []
    loop.call_on_next_pass(lambda: ran.append("snapshot"))
    client.send(b"GET / HTTP/1.1\r\n")
    _drain(loop)
    loop._pipe.readable()  # supervisord's next pass asks the pipe whether to poll it
    assert ran == []
    assert _woken(loop)

    client.served()
    loop._pipe.readable()
    assert ran == ["snapshot"]
