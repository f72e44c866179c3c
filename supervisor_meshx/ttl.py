"""TTL health: each service's check status, sent to Consul every ``ttl`` ms.

Beyond MeshxConsul, the status sent is critical while the service's proxy is
not RUNNING (the output names the proxy's state), and goes back to the
status set by ``setTtlStatus`` once the proxy runs again.  A proxy state
change or a new status is sent at once.

The schedule lives on supervisord's main loop (one timer for all services);
the HTTP calls go out in pipelined batches on worker threads.  After its
first update a check is due on a grid of its interval, the same for every
check of that interval: they all go out in one tick per interval (every tick
costs supervisord a pass over all its processes), from the first round on.
"""
import math
import random
import time

from supervisor_meshx.consul_agent import ConsulUnavailable

STATUSES = ("passing", "warning", "critical")
BATCH = 100  # regular updates sent by one worker thread in one go (pipelined)
# Changed statuses go out side by side in this many parts at most (a start waits for them, and
# the agent answers the requests pipelined on one connection one after another).
URGENT_PARTS = 8
# Nobody waits for a regular batch's answers: they are let gather this long per update (at most
# LINGER_CAP) and read together, not one worker wake-up per answer (~40 us of CPU each).
LINGER_PER_UPDATE = 0.0005
LINGER_CAP = 0.05
# Regular updates go out in ticks at least this far apart, each sending what is
# due within this much (at most a quarter of the interval) after it: every tick
# costs supervisord a loop pass over all its processes.
EARLY = 1.0
# A tick goes this much before the earliest due update, so that a late tick still sends it within
# its interval (a check whose TTL is its update interval must not expire).
AHEAD = 0.25
# supervisord's loop passes at least once a second: checks of a longer interval are noted at its
# next pass without a wake
NOTED_IN_A_PASS = 2.0
RETRY_CAP = 5.0  # seconds between retries while the agent is unreachable


class TtlCheck:
    def __init__(self, service_id, check_id, status, interval, token_file=None):
        self.service_id = service_id
        self.token_file = token_file  # the service's own token, if it has one
        self.check_id = check_id
        self.status = status
        self.interval = interval
        self.due = 0.0
        self.sent_at = 0.0  # when the update in flight was due (a changed status: when it was sent)
        self.early = min(EARLY, interval / 4.0)
        self.in_flight = False
        self.changed_in_flight = False
        self.sent = None  # the status Consul last accepted
        self.sent_count = 0
        self.failures = 0


class TtlKeeper:
    def __init__(self, loop, agent, proxy_state, on_missing, log, health_problem=lambda service_id: None,
                 count=lambda sent, failed: None):
        """``proxy_state(service_id)``: the proxy's state name, or None without a proxy;
        ``on_missing(service_id)``: the agent answered that it has no such check;
        ``health_problem(service_id)``: what its proxy's health probe found wrong, or None;
        ``count(sent, failed)``: updates accepted and not, after each batch (for the metrics)."""
        self._count = count
        self._loop = loop
        self._agent = agent
        self._proxy_state = proxy_state
        self._on_missing = on_missing
        self._log = log
        self._health_problem = health_problem
        self._checks = {}
        self._next_tick = math.inf
        self._last_tick = -math.inf
        self._agent_down = False
        self._refused = False
        self._stopped = False
        self._phase = random.random()  # of the grid: keepers on one host don't all send at once

    def stop(self):
        """No more updates: supervisord is stopping, reloading or handing over."""
        self._stopped = True

    # -- main thread -----------------------------------------------------

    def add(self, service_id, check_id, status, interval_ms, token_file=None):
        self._checks[service_id] = TtlCheck(service_id, check_id, status, interval_ms / 1000.0, token_file)
        self.send_soon(service_id)

    def remove(self, service_id):
        self._checks.pop(service_id, None)

    def get(self, service_id):
        return self._checks.get(service_id)

    def set_status(self, service_id, status):
        self._checks[service_id].status = status
        self.send_soon(service_id)

    def send_soon(self, service_id):
        check = self._checks.get(service_id)
        if check is None:
            return
        if check.in_flight:
            check.changed_in_flight = True
            self._loop.wake()  # so that the update in flight is noted (and this one sent) at once
        else:
            check.due = 0.0
            self._schedule(0.0)

    def effective(self, check):
        state = self._proxy_state(check.service_id)
        if state is None or state == "RUNNING":
            problem = self._health_problem(check.service_id)
            if problem:
                return "critical", "proxy RUNNING but its health probe fails: %s" % problem
            return check.status, "set by supervisor-meshx" + ("" if state is None else "; proxy RUNNING")
        return "critical", "proxy %s (not running)" % state

    def _schedule(self, delay):
        when = time.monotonic() + delay
        if when < self._next_tick - 0.001:
            self._next_tick = when
            if delay > 0.0:
                self._loop.call_later(delay, self._tick)
            else:
                self._loop.call_on_next_pass(self._tick)  # at the end of this pass, without a wake

    def _tick(self):
        if self._stopped:
            return
        if time.monotonic() < self._next_tick - 0.001:
            return  # superseded by an earlier tick that rescheduled
        self._next_tick = math.inf
        now = self._last_tick = time.monotonic()
        batch = []
        for check in self._checks.values():
            if not check.in_flight and check.due - check.early <= now:
                check.in_flight = True
                # counted as sent when it was due, which keeps it on its grid; taken along more
                # than AHEAD early, as sent AHEAD after now: its next update stays within its
                # interval of this one
                check.sent_at = now if check.due == 0.0 else min(check.due, now + AHEAD)
                status, output = self.effective(check)
                batch.append((check, status, output))
        # changed statuses (a start waits for them) go in small batches of their own, not behind
        # regular updates; a startMany's thousand first updates are not a thousand trips
        urgent = [entry for entry in batch if entry[0].due == 0.0]
        regular = [entry for entry in batch if entry[0].due != 0.0]
        size = max(1, min(BATCH, -(-len(urgent) // URGENT_PARTS)))
        for part in [urgent[i:i + size] for i in range(0, len(urgent), size)]:
            future = self._loop.submit(self._send, part)
            future.add_done_callback(
                lambda f, part=part: self._loop.call_soon(lambda: self._sent(part, f.result())))
        if regular:
            self._loop.submit(self._send_regular, [regular[i:i + BATCH] for i in range(0, len(regular), BATCH)],
                              wake=False)
        self._reschedule()

    def _reschedule(self, checks=None):
        """The next tick shortly before the earliest update is due (it then takes along those due
        within their ``early``: checks off the grid, after a retry or a changed status).
        ``checks``: only these changed their due time (a tick looks at all of them)."""
        waiting = [c for c in (self._checks.values() if checks is None else checks) if not c.in_flight]
        if waiting:
            earliest = min(c.due - min(c.early, AHEAD) for c in waiting)
            if earliest > 0.0:  # not a changed status: keep regular ticks apart
                earliest = max(earliest, self._last_tick + min(c.early for c in waiting))
            self._schedule(max(0.0, earliest - time.monotonic()))

    def _sent(self, part, results):
        now = time.monotonic()
        for (check, status, _output), error in zip(part, results):
            check.in_flight = False
            changed = check.due == 0.0  # due stays as it was while the update is in flight
            if error is None:
                check.sent = status
                check.sent_count += 1
                check.failures = 0
                check.due = self._next_on_grid(check.sent_at, check.interval)
                if changed and check.due - check.sent_at < check.interval / 2.0:
                    # a status that just changed (a start) may change again soon (its proxy runs):
                    # the next change must not wait behind a regular batch to a slow agent
                    check.due = check.sent_at + check.interval
            else:
                check.failures += 1
                check.due = now + min(check.interval, RETRY_CAP, 0.1 * 2 ** check.failures)
            if check.changed_in_flight:
                check.changed_in_flight = False
                check.due = 0.0  # a change: sent at once, not behind regular updates
            if isinstance(error, LookupError) and check.service_id in self._checks:
                self._on_missing(check.service_id)
        self._note_outage(results)
        failed = sum(1 for error in results if error is not None)
        self._count(len(results) - failed, failed)
        self._reschedule([check for check, _status, _output in part])

    def _next_on_grid(self, when, interval):
        """The first grid point of ``interval`` after ``when`` and at most ``interval`` after it:
        never more than the interval between two updates, so that a check whose TTL is the
        interval itself doesn't expire.  (A grid point itself gives the next one, despite float
        rounding.)"""
        offset = self._phase * interval
        return math.floor((when + interval - offset) / interval + 1e-6) * interval + offset

    def _note_outage(self, results):
        """Log an outage, or a run of refused updates, once when it starts and once when it ends."""
        down = next((e for e in results if isinstance(e, ConsulUnavailable)), None)
        refused = next((e for e in results if e is not None and not isinstance(e, (ConsulUnavailable,
                                                                                   LookupError))), None)
        succeeded = any(e is None for e in results)
        if down and not self._agent_down:
            self._log("meshx: Consul agent unreachable; TTL updates will be retried: %s" % down)
        elif self._agent_down and not down and succeeded:
            self._log("meshx: Consul agent reachable again")
        self._agent_down = bool(down) or (self._agent_down and not succeeded)
        if refused and not self._refused:
            self._log("meshx: the Consul agent refuses TTL updates; they will be retried: %s" % refused)
        elif self._refused and not refused and succeeded:
            self._log("meshx: the Consul agent accepts TTL updates again")
        self._refused = bool(refused) or (self._refused and not succeeded)

    # -- worker thread ---------------------------------------------------

    def _send(self, part, linger=0.0):
        try:
            return self._agent.update_checks([(c.check_id, s, o, c.token_file) for c, s, o in part], linger)
        except Exception as exc:
            return [exc] * len(part)

    def _send_regular(self, parts):
        """Nobody waits for regular updates: the parts go one after another on one connection,
        each read once its answers have gathered (parts side by side on many connections each
        trickle in, one wake-up per answer), and each is noted at the loop's next pass without
        a wake (within a second), unless a status changed meanwhile (send_soon also wakes the
        loop) or a check's next update is due too soon for that."""
        for part in parts:
            if self._stopped:
                return
            results = self._send(part, min(LINGER_CAP, LINGER_PER_UPDATE * len(part)))
            if any(check.changed_in_flight or check.interval < NOTED_IN_A_PASS
                   for check, _status, _output in part):
                self._loop.call_soon(lambda part=part, results=results: self._sent(part, results))
            else:
                self._loop.call_on_next_pass(lambda part=part, results=results: self._sent(part, results))
