"""Work done against a supervisord: starting many services or programs, timing calls.

Every client thread has its own ServerProxy (ServerProxy is not thread-safe).
"""
import queue
import threading
import time
import xmlrpc.client

from benchmarks import server as server_module
from benchmarks.stats import summary_ms


def meshx_start(template=None):
    """A start function: meshx.start(name[, template]) with the default timeout (waits for passing)."""
    def start(rpc, name):
        if template is None:
            return rpc.meshx.start(name)
        return rpc.meshx.start(name, template)
    return start


def twiddler_start(rpc, name):
    """twiddler.addProgramToGroup into [group:baseline], then supervisor.startProcess(wait=True)."""
    rpc.twiddler.addProgramToGroup("baseline", name, server_module.program_options())
    return rpc.supervisor.startProcess("baseline:" + name, True)


def start_many(server, names, start, concurrency, progress=None, every=10.0, deadline=None):
    """Run ``start(rpc, name)`` for every name with ``concurrency`` client threads.

    The threads meet at a barrier before their first call, so they start at
    once.  ``progress(done, total)`` is called every ``every`` seconds.  Past
    ``deadline`` (time.monotonic()) no new call is made: the result is then
    ``cut_short`` and ``projected_total_s`` extrapolates the rate so far.
    Returns {total_s, calls (summary), ok, failed, failures: [first few messages], cut_short}.
    """
    todo = queue.Queue()
    for name in names:
        todo.put(name)
    latencies, failures = [], []
    lock = threading.Lock()

    count = min(concurrency, len(names))
    barrier = threading.Barrier(count + 1)

    def client():
        rpc = server.rpc()
        barrier.wait()
        while True:
            if deadline is not None and time.monotonic() > deadline:
                return
            try:
                name = todo.get_nowait()
            except queue.Empty:
                return
            began = time.monotonic()
            try:
                start(rpc, name)
                error = None
            except (xmlrpc.client.Fault, OSError, xmlrpc.client.ProtocolError) as exc:
                error = "%s: %s" % (name, getattr(exc, "faultString", exc))
                rpc = server.rpc()
            elapsed = time.monotonic() - began
            with lock:
                if error is None:
                    latencies.append(elapsed)
                else:
                    failures.append(error)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.monotonic()
    for thread in threads:
        while thread.is_alive():
            thread.join(every)
            if progress is not None and thread.is_alive():
                with lock:
                    done = len(latencies) + len(failures)
                progress(done, len(names))
    total = time.monotonic() - began
    done = len(latencies) + len(failures)
    result = {"total_s": round(total, 3), "calls": summary_ms(latencies), "ok": len(latencies),
              "failed": len(failures), "failures": failures[:5], "cut_short": done < len(names)}
    if result["cut_short"]:
        result["projected_total_s"] = round(total * len(names) / max(done, 1), 1)
    return result


def time_calls(call, count, pause=0.0):
    """Latencies (s) of ``count`` sequential calls of ``call()``."""
    latencies = []
    for _ in range(count):
        began = time.monotonic()
        call()
        latencies.append(time.monotonic() - began)
        if pause:
            time.sleep(pause)
    return latencies


def getstate_latencies(server, count=200):
    rpc = server.rpc()
    return time_calls(rpc.supervisor.getState, count)


class GetStateSampler:
    """A thread calling supervisor.getState back to back (own client) until stopped."""

    def __init__(self, server, pause=0.002):
        self._server = server
        self._pause = pause
        self._stop = threading.Event()
        self.latencies = []
        self.errors = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(30)

    def _run(self):
        rpc = self._server.rpc()
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                rpc.supervisor.getState()
            except (OSError, xmlrpc.client.Fault, xmlrpc.client.ProtocolError):
                self.errors += 1
                rpc = self._server.rpc()
                continue
            self.latencies.append(time.monotonic() - began)
            time.sleep(self._pause)


def all_running(server, name_prefix="", expected=None):
    """True when every process whose name starts with ``name_prefix`` is RUNNING."""
    infos = [i for i in server.rpc().supervisor.getAllProcessInfo() if i["name"].startswith(name_prefix)]
    if expected is not None and len(infos) < expected:
        return False
    return all(i["statename"] == "RUNNING" for i in infos)


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def start_running(ctx, server, prefix, count, chunk=100):
    """meshx.startMany of ``prefix``0..count-1 in chunks (timeout=0), then wait until every proxy is RUNNING."""
    rpc = server.rpc()
    names = ["%s%d" % (prefix, i) for i in range(count)]
    for first in range(0, count, chunk):
        for result in rpc.meshx.startMany(names[first:first + chunk], "", False, 0):
            if "error" in result or "faultString" in result:
                raise RuntimeError("startMany: %r" % (result,))
    wait_until(lambda: all_running(server, "meshx-" + prefix, count), timeout=60 + count * 0.1,
               what="%d proxies RUNNING" % count)
    ctx.log("  %d services running" % count)
