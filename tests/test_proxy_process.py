"""A proxy's process: supervisord's Subprocess with the plugin's rules.

No supervisord here: a ProxyProcess is given the few settings a stop reads,
and a real child process stands for the proxy.
"""
import os
import signal
import subprocess
import sys
import time
import types

import pytest
from supervisor.states import ProcessStates

from supervisor_meshx.proxy_process import ProxyProcess


class _Logger:
    def __getattr__(self, _level):
        return lambda *args, **kwargs: None


def _proxy_process(pid):
    """A STARTING proxy with ``pid``, stopped and killed as a group (as every proxy is)."""
    options = types.SimpleNamespace(logger=_Logger(), kill=os.kill)
    config = types.SimpleNamespace(name="meshx-api-node1", options=options, stopasgroup=True, killasgroup=True,
                                   stopwaitsecs=10)
    process = ProxyProcess(config)
    process.pid = pid
    process.state = ProcessStates.STARTING
    return process


def _exit_status(child, timeout=5.0):
    try:
        return child.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


@pytest.fixture
def child():
    """A process still in the test's own process group, as a proxy is between its fork and
    its setpgrp (then it has no group of its own)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child
    if child.poll() is None:
        child.kill()
        child.wait()


def test_a_proxy_stopped_before_it_has_a_process_group_is_signalled_alone(child):
    process = _proxy_process(child.pid)
    assert process.kill(signal.SIGTERM) is None
    assert process.state == ProcessStates.STOPPING
    assert process.pid == child.pid, "supervisord must not lose track of the proxy"
    assert _exit_status(child) == -signal.SIGTERM
    assert (process.config.stopasgroup, process.config.killasgroup) == (True, True)


def test_a_proxy_with_its_process_group_is_signalled_as_a_group():
    leader = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                               "time.sleep(60)"], start_new_session=True)
    try:
        process = _proxy_process(leader.pid)
        deadline = time.monotonic() + 5.0
        while len(_group_members(leader.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # polled: the leader starts its child
        assert len(_group_members(leader.pid)) == 2
        assert process.kill(signal.SIGTERM) is None
        assert _exit_status(leader) == -signal.SIGTERM
        deadline = time.monotonic() + 5.0
        while _group_members(leader.pid) and time.monotonic() < deadline:
            time.sleep(0.01)  # polled: the group's other member exits on the same signal
        assert _group_members(leader.pid) == []
    finally:
        try:
            os.killpg(leader.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        leader.wait()


def _group_members(pgid):
    """Live (not zombie) processes of process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members
