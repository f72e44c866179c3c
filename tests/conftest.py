import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from supervisord_harness import Supervisord  # noqa: E402


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
