"""A real supervisord with the meshx plugin, in a temporary directory."""
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import xmlrpc.client

from supervisor.xmlrpc import SupervisorTransport

DEADLINE = 10.0


def wait_for(predicate, timeout=DEADLINE, interval=0.02, message="condition"):
    """Poll ``predicate`` until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, message))
        time.sleep(interval)


def free_port_range(size=40, avoid=()):
    """A range of currently bindable ports, away from the ephemeral range and from ``avoid`` (a range)."""
    while True:
        low = random.randrange(22000, 32000 - size)
        if avoid and low <= avoid[1] and avoid[0] <= low + size - 1:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", low))
            except OSError:
                continue
        return low, low + size - 1


class Supervisord:
    """Starts ``supervisord -n`` on a unix socket; ``rpc`` and ``ctl`` talk to it."""

    def __init__(self, meshx_options=None, extra_config="", inet_port=None, supervisord_options=""):
        # unix socket paths are limited to ~100 bytes: keep the directory short
        self.dir = tempfile.mkdtemp(prefix="mx", dir="/tmp")
        self.socket = os.path.join(self.dir, "s.sock")
        self.conf = os.path.join(self.dir, "supervisord.conf")
        self.logfile = os.path.join(self.dir, "supervisord.log")
        self.inet_port = inet_port
        options = {"proxy_executables": "sleep, sh, " + sys.executable, "proxy_startsecs": "0"}
        options.update(meshx_options or {})
        self.write_config(options, extra_config, supervisord_options)
        self.proc = None

    def write_config(self, meshx_options, extra_config="", supervisord_options=""):
        meshx = "\n".join("%s = %s" % item for item in meshx_options.items())
        inet = ("[inet_http_server]\nport = 127.0.0.1:%d\n" % self.inet_port) if self.inet_port else ""
        with open(self.conf, "w") as f:
            f.write(textwrap.dedent("""\
                [supervisord]
                logfile = {d}/supervisord.log
                pidfile = {d}/supervisord.pid
                childlogdir = {d}
                loglevel = debug
                {supervisord_options}

                [unix_http_server]
                file = {sock}

                {inet}
                [supervisorctl]
                serverurl = unix://{sock}

                [rpcinterface:supervisor]
                supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

                [rpcinterface:meshx]
                supervisor.rpcinterface_factory = supervisor_meshx.rpcinterface:make_meshx_rpcinterface
                """).format(d=self.dir, sock=self.socket, inet=inet, supervisord_options=supervisord_options))
            f.write(meshx + "\n\n" + textwrap.dedent(extra_config))

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", self.conf],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(self._running, message="supervisord to run")
        return self

    def _running(self):
        if self.proc.poll() is not None:
            raise AssertionError("supervisord exited: %s\n%s" % (
                self.proc.returncode, self.proc.stderr.read().decode(errors="replace")))
        try:
            return self.rpc.supervisor.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Fault):
            return False

    @property
    def rpc(self):
        """A new XML-RPC proxy (one per call: ServerProxy is not thread-safe)."""
        return xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=SupervisorTransport(None, None, "unix://" + self.socket))

    def ctl(self, *args, timeout=30):
        return subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", self.conf] + list(args),
            capture_output=True, text=True, timeout=timeout)

    def log(self):
        with open(self.logfile, errors="replace") as f:
            return f.read()

    def terminate(self, sig=signal.SIGTERM):
        """Send ``sig`` to supervisord and wait for it to exit; its directory stays."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self):
        self.terminate()
        shutil.rmtree(self.dir, ignore_errors=True)
