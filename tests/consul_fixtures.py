"""Fixtures for tests that talk to a Consul agent: the double, or a real ``consul agent -dev`` when installed.

    from consul_fixtures import *  # consul_agent, consul_double
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import closing

import pytest
import requests

from supervisor_meshx.testing.consul_double import ConsulDouble

__all__ = ["consul_agent", "consul_double", "RealConsulAgent"]

NODE_NAME = "node1"


def _free_port():
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RealConsulAgent:
    """``consul agent -dev`` on loopback with free ports; same addressing attributes as ConsulDouble."""

    is_double = False

    def __init__(self, node_name=NODE_NAME, startup_timeout=30.0):
        self.node_name = node_name
        self.startup_timeout = startup_timeout
        self.port = _free_port()
        self.http_addr = "127.0.0.1:%d" % self.port
        self.url = "http://" + self.http_addr
        self._process = None
        self._workdir = None

    def start(self):
        self._workdir = tempfile.mkdtemp(prefix="consul-dev-")
        ports = {"-http-port": self.port}
        for flag in ("-dns-port", "-grpc-port", "-serf-lan-port", "-serf-wan-port", "-server-port"):
            ports[flag] = _free_port()
        command = [shutil.which("consul"), "agent", "-dev", "-node", self.node_name,
                   "-bind", "127.0.0.1", "-client", "127.0.0.1"]
        for flag, port in ports.items():
            command += [flag, str(port)]
        self._log = open(os.path.join(self._workdir, "consul.log"), "wb")
        self._process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                         cwd=self._workdir)
        self._wait_until_ready()
        return self

    def _wait_until_ready(self):
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError("consul agent exited with %d; log in %s" % (self._process.returncode, self._workdir))
            try:
                if requests.get(self.url + "/v1/agent/self", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("consul agent did not answer within %.0fs" % self.startup_timeout)

    def stop(self):
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._workdir:
            self._log.close()
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


@pytest.fixture(params=["double", "real"], ids=["double", "real"])
def consul_agent(request):
    """A running local agent: the ConsulDouble, or a real dev agent (skipped when consul is not installed)."""
    if request.param == "double":
        agent = ConsulDouble(node_name=NODE_NAME).start()
    else:
        if not shutil.which("consul"):
            pytest.skip("consul binary not installed")
        agent = RealConsulAgent(NODE_NAME).start()
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture
def consul_double():
    """The ConsulDouble alone, for tests that turn its knobs."""
    agent = ConsulDouble(node_name=NODE_NAME).start()
    try:
        yield agent
    finally:
        agent.stop()
