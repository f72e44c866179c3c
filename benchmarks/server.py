"""One supervisord with the meshx plugin and supervisor_twiddler loaded.

It runs ``python -m supervisor.supervisord -n -c CONF`` from a short /tmp
directory (unix socket paths are limited to ~100 bytes).  Proxies are the
stand-in ``sleep 100000``; twiddler programs get the same settings a proxy
gets (startsecs, stopwaitsecs, stopasgroup, killasgroup, log files).
"""
import json
import os
import resource
import shutil
import sys
import tempfile
import textwrap
import time
import xmlrpc.client

from supervisor.xmlrpc import SupervisorTransport

from benchmarks import procs

STARTSECS = 1
STOPWAITSECS = 10
STANDIN = ["sleep", "100000"]
MESHX_PORTS = "24000-27999"  # service endpoints; by-hand registrations use 28000 and up
MESHX_SIDECAR_PORTS = "29000-30999"  # room for 1,000 sidecars even with some ports in use
FDS_PER_PROCESS = 6


def program_options():
    """twiddler.addProgramToGroup options matching a meshx proxy's program config."""
    return {
        "command": " ".join(STANDIN),
        "autostart": "false",
        "autorestart": "false",
        "startsecs": str(STARTSECS),
        "stopwaitsecs": str(STOPWAITSECS),
        "stopasgroup": "true",
        "killasgroup": "true",
        "redirect_stderr": "false",
    }


def program_section(name, count=1, autorestart=False):
    """A [program] section with the settings a proxy gets (``count`` > 1: numprocs of it)."""
    numprocs = "process_name = %%(program_name)s-%%(process_num)02d\nnumprocs = %d\n" % count if count > 1 else ""
    return ("\n[program:%s]\ncommand = %s\n%sautostart = true\nautorestart = %s\nstartsecs = %d\n"
            "stopwaitsecs = %d\nstopasgroup = true\nkillasgroup = true\n"
            % (name, " ".join(STANDIN), numprocs, "true" if autorestart else "false", STARTSECS, STOPWAITSECS))


def minfds_for(processes):
    """supervisord's minfds for ``processes`` children; raises if RLIMIT_NOFILE can't allow it."""
    wanted = max(1024, FDS_PER_PROCESS * processes + 256)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        raise RuntimeError("RLIMIT_NOFILE hard limit %d < minfds %d needed for %d processes"
                           % (hard, wanted, processes))
    return wanted


class Supervisord:
    def __init__(self, consul_addr, max_processes, extra_config=""):
        self.dir = tempfile.mkdtemp(prefix="mxb", dir="/tmp")
        self.socket = os.path.join(self.dir, "s.sock")
        self.conf = os.path.join(self.dir, "sd.conf")
        self.minfds = minfds_for(max_processes)
        self.proc = None
        self.shutdown_s = None  # SIGTERM to exit, set by stop()
        template = os.path.join(self.dir, "tmpl.json")
        with open(template, "w") as f:
            json.dump({"proxy": STANDIN}, f)
        with open(self.conf, "w") as f:
            f.write(textwrap.dedent("""\
                [supervisord]
                logfile = {d}/supervisord.log
                pidfile = {d}/supervisord.pid
                childlogdir = {d}
                loglevel = info
                minfds = {minfds}

                [unix_http_server]
                file = {sock}

                [supervisorctl]
                serverurl = unix://{sock}

                [rpcinterface:supervisor]
                supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

                [rpcinterface:twiddler]
                supervisor.rpcinterface_factory = supervisor_twiddler.rpcinterface:make_twiddler_rpcinterface

                [rpcinterface:meshx]
                supervisor.rpcinterface_factory = supervisor_meshx.rpcinterface:make_meshx_rpcinterface
                consul_http_addr = {consul}
                node_name = bench
                proxy_executables = sleep
                proxy_startsecs = {startsecs}
                proxy_stopwaitsecs = {stopwaitsecs}
                service_template = {template}
                port_range = {ports}
                sidecar_port_range = {sidecar_ports}

                ; twiddler can't create groups: programs are added to this one
                [program:dummy]
                command = {standin}
                autostart = false
                startsecs = {startsecs}

                [group:baseline]
                programs = dummy
                """).format(d=self.dir, sock=self.socket, minfds=self.minfds, consul=consul_addr,
                            startsecs=STARTSECS, stopwaitsecs=STOPWAITSECS, template=template,
                            ports=MESHX_PORTS, sidecar_ports=MESHX_SIDECAR_PORTS, standin=" ".join(STANDIN)))
            f.write(textwrap.dedent(extra_config))

    def start(self, timeout=30.0):
        self.proc = procs.spawn([sys.executable, "-m", "supervisor.supervisord", "-n", "-c", self.conf],
                                stdout=open(os.path.join(self.dir, "stdout"), "wb"),
                                stderr=open(os.path.join(self.dir, "stderr"), "wb"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("supervisord exited with %s: %s" % (self.proc.returncode, self._tail()))
            try:
                if self.rpc().supervisor.getState()["statename"] == "RUNNING":
                    return self
            except (OSError, xmlrpc.client.Fault):
                pass
            time.sleep(0.05)
        raise RuntimeError("supervisord did not run within %ss: %s" % (timeout, self._tail()))

    @property
    def pid(self):
        return self.proc.pid

    def rpc(self):
        """A new ServerProxy: one per thread (ServerProxy is not thread-safe)."""
        return xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=SupervisorTransport(None, None, "unix://" + self.socket))

    def rss_kb(self):
        return procs.rss_kb(self.pid)

    def cpu_seconds(self):
        return procs.cpu_seconds(self.pid)

    def _tail(self):
        text = ""
        for name in ("stderr", "supervisord.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    text += f.read()[-2000:]
            except OSError:
                pass
        return text

    def stop(self, grace=30.0):
        if self.proc is not None:
            self.shutdown_s = procs.stop(self.proc, grace)
        shutil.rmtree(self.dir, ignore_errors=True)
