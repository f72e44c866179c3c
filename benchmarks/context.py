"""What every scenario gets: the mode, the time budget, progress lines, and environments.

An environment is one Consul double plus one supervisord pointed at it; both
are stopped (and their sessions swept) when the ``with`` block ends, even on
errors.
"""
import contextlib
import sys
import time

from benchmarks.consul import DoubleProcess
from benchmarks.server import Supervisord


class BudgetExceeded(Exception):
    pass


class HardLimit(BaseException):
    """Raised by SIGALRM in the main thread: not swallowed by ``except Exception``."""


class Context:
    def __init__(self, quick, budget_s):
        self.quick = quick
        self.began = time.monotonic()
        self.deadline = self.began + budget_s
        self.double_errors = []
        self.partial = None  # a scenario may set a function returning its results so far

    def log(self, message):
        print("[%6.1fs] %s" % (time.monotonic() - self.began, message), file=sys.stderr, flush=True)

    def remaining(self):
        return self.deadline - time.monotonic()

    def check_budget(self, needed_s=0.0, what="next step"):
        if self.remaining() < needed_s:
            raise BudgetExceeded("%s needs ~%.0fs, %.0fs of the budget left" % (what, needed_s, self.remaining()))

    @contextlib.contextmanager
    def environment(self, max_processes, extra_config="", unix_socket=False):
        """``unix_socket``: supervisord reaches the agent over a unix socket (by-hand clients still use TCP)."""
        double = server = None
        try:
            double = DoubleProcess(unix_socket)
            server = Supervisord(double.unix_addr if unix_socket else double.http_addr, max_processes,
                                 extra_config).start()
            yield double, server
        finally:
            if server is not None:
                server.stop()
                self.log("  supervisord stopped: %s" % ("SIGTERM to exit %.1fs" % server.shutdown_s
                                                         if server.shutdown_s is not None else "killed"))
            if double is not None:
                errors, first = double.stop()
                if errors:
                    self.log("  the Consul double printed %d tracebacks (first: %s)" % (errors, first))
                    self.double_errors.append({"count": errors, "first": first})


def row(metric, meshx, baseline, ratio=None, target=None, met=None, unit=""):
    return {"metric": metric, "unit": unit, "meshx": meshx, "baseline": baseline, "ratio": ratio,
            "target": target, "met": met}


def at_most(value, limit):
    return None if value is None else value <= limit
