"""The Consul agent double in a child process, and a by-hand Consul client.

The double (``supervisor_meshx.testing.consul_double.ConsulDouble``) runs many
threads (a TTL timer per check, a TCP prober per sidecar).  Run inside the
harness they would compete for the harness's GIL and blur its timings, so it
runs in a child process (``python -m benchmarks.consul``) steered over
stdin/stdout with one JSON line per command.  It listens on 127.0.0.1 only.
Tracebacks it prints go to a log that ``stop`` counts.
"""
import json
import os
import sys
import threading

SIDECAR_PORTS = (21000, 22999)  # the default 21000-21255 holds only 256 sidecars


class DoubleProcess:
    """Parent side: start the double, turn its knobs, read its request counts."""

    def __init__(self, unix_socket=False):
        """``unix_socket``: also serve HTTP on a unix socket (``unix_addr``)."""
        from benchmarks import procs
        import subprocess
        import tempfile
        self._stderr = tempfile.NamedTemporaryFile(prefix="mxb-consul-", suffix=".log", dir="/tmp", delete=False)
        self._socket = self._stderr.name[:-len(".log")] + ".sock" if unix_socket else ""
        self.unix_addr = "unix://" + self._socket if unix_socket else ""
        self._proc = procs.spawn([sys.executable, "-m", "benchmarks.consul", self._socket], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1)
        self._lock = threading.Lock()
        hello = self._read()
        self.port = hello["port"]
        self.pid = self._proc.pid
        self.http_addr = "127.0.0.1:%d" % self.port

    def _read(self):
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the Consul double exited (%s)" % self._proc.poll())
        return json.loads(line)

    def _ask(self, **command):
        with self._lock:
            self._proc.stdin.write(json.dumps(command) + "\n")
            self._proc.stdin.flush()
            answer = self._read()
        if "error" in answer:
            raise RuntimeError("Consul double: %s" % answer["error"])
        return answer.get("value")

    def count_requests(self, method=None, path_prefix=None, since=None, until=None):
        """``since``, ``until``: time.time() of this host (the double runs on it)."""
        return self._ask(op="count", method=method, prefix=path_prefix, since=since, until=until)

    def set_latency(self, seconds):
        self._ask(op="latency", value=seconds)

    def ttl_expirations(self):
        """TTL checks the double has marked critical because no update came within their TTL."""
        return self._ask(op="expirations")

    def check_statuses(self, prefix="ttl:"):
        """{status: count} of the checks whose id starts with ``prefix``."""
        return self._ask(op="statuses", prefix=prefix)

    def stop(self):
        """Stop the double; return (tracebacks it printed, the last line of the first one)."""
        from benchmarks import procs
        try:
            self._ask(op="quit")
        except (OSError, ValueError, RuntimeError):
            pass
        procs.stop(self._proc, grace=5)
        self._stderr.close()
        with open(self._stderr.name, errors="replace") as f:
            lines = f.read().splitlines()
        os.remove(self._stderr.name)
        if self._socket and os.path.exists(self._socket):
            os.remove(self._socket)
        starts = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
        first = ""
        if starts:
            following = [line for line in lines[starts[0] + 1:] if line and not line.startswith(" ")]
            first = following[0] if following else ""
        return len(starts), first


class HandClient:
    """What a client does by hand: python-consul2's HTTP transport, status codes read directly."""

    def __init__(self, http_addr):
        import consul
        host, port = http_addr.rsplit(":", 1)
        self._http = consul.Consul(host=host, port=int(port)).http
        self._http.session.trust_env = False  # never through an HTTP proxy

    def register(self, definition):
        response = self._http.put(lambda r: r, "/v1/agent/service/register", data=json.dumps(definition))
        _expect(response, "register")

    def ttl_update(self, check_id, status="passing", output="set by hand"):
        response = self._http.put(lambda r: r, "/v1/agent/check/update/" + check_id,
                                  data=json.dumps({"Status": status, "Output": output}))
        _expect(response, "check update")

    def health_code(self, service_id):
        return self._http.get(lambda r: r, "/v1/agent/health/service/id/" + service_id,
                              params=[("format", "text")]).code

    def close(self):
        self._http.session.close()


def registration(service_id, name, address, port):
    """The body meshx.start sends with the default template (README, Templates)."""
    return {
        "ID": service_id,
        "Name": name,
        "Checks": [{"Name": "TTL check", "CheckID": "ttl:" + service_id, "TTL": "10s"}],
        "Connect": {"SidecarService": {"Proxy": {"LocalServiceAddress": address, "LocalServicePort": port}}},
    }


def _expect(response, what):
    if response.code != 200:
        raise RuntimeError("%s: %d %s" % (what, response.code, response.body))


def _count_expirations():
    """Count the TTL timers that fire on a live check (the check turns critical)."""
    from supervisor_meshx.testing.consul_double import AgentState
    counter = [0]
    original = AgentState.expire_ttl

    def expire_ttl(self, check_id, timer):
        with self.lock:
            check = self.checks.get(check_id)
            live = check is not None and check.runner is timer
            original(self, check_id, timer)
            if live:
                counter[0] += 1
    AgentState.expire_ttl = expire_ttl
    return counter


def _serve(unix_socket):
    """Child side: run the double until told to quit or stdin closes."""
    from supervisor_meshx.testing.consul_double import ConsulDouble
    expirations = _count_expirations()
    options = {"unix_socket": unix_socket} if unix_socket else {}
    double = ConsulDouble(node_name="bench", sidecar_port_range=SIDECAR_PORTS, **options).start()

    def answer(value):
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()

    answer({"port": double.port})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            op = command.get("op")
            try:
                if op == "count":
                    answer({"value": double.count_requests(command.get("method"), command.get("prefix"),
                                                           command.get("since"), command.get("until"))})
                elif op == "latency":
                    double.latency = float(command["value"])
                    answer({"value": True})
                elif op == "statuses":
                    counts = {}
                    for check_id, check in double.checks().items():
                        if check_id.startswith(command.get("prefix") or ""):
                            counts[check["Status"]] = counts.get(check["Status"], 0) + 1
                    answer({"value": counts})
                elif op == "expirations":
                    answer({"value": expirations[0]})
                elif op == "quit":
                    answer({"value": True})
                    break
                else:
                    answer({"error": "unknown op %r" % op})
            except Exception as exc:  # keep serving
                answer({"error": repr(exc)})
    finally:
        double.stop()


if __name__ == "__main__":
    _serve(sys.argv[1] if len(sys.argv) > 1 else "")
