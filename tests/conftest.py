import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from supervisord_harness import Supervisord, free_port_range  # noqa: E402


@pytest.fixture
def make_supervisord():
    """Factory: ``make_supervisord(meshx_options={...}, ...)`` starts one; all stop at teardown."""
    started = []

    def make(**kwargs):
        server = Supervisord(**kwargs)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def supervisord(make_supervisord):
    return make_supervisord()


@pytest.fixture
def port_range():
    return free_port_range()


@pytest.fixture
def sidecar_port_range(port_range):
    return free_port_range(avoid=port_range)
