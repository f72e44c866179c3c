"""Multi-step RPC calls that run on supervisord's loop without blocking it.

An operation is written as a generator that runs on the main thread between
its ``yield``s.  It yields a ``concurrent.futures.Future`` (work on a worker
thread; the future's result is sent back in) or a ``Wait`` (a main-loop
condition polled until it holds or times out; True or False is sent back).
The task runs to its end even if the XML-RPC client goes away, so a call's
clean-up after a failure always happens.
"""
import time
import traceback
from concurrent.futures import Future

from supervisor.http import NOT_DONE_YET, deferring_http_channel
from supervisor.medusa import asyncore_25 as asyncore
from supervisor.xmlrpc import RPCError

from supervisor_meshx.faults import MeshxFault

# How often supervisord may poll a pending deferred; see MainLoop for the wake.
DEFERRED_DELAY = 0.05


class Wait:
    """Wait on the main loop until ``predicate()`` holds, at most ``timeout`` s.

    It is checked whenever the loop is woken through MainLoop (a finished
    Consul call, a proxy state change, ...) and at least every ``interval`` s.
    """

    def __init__(self, predicate, timeout, interval=0.05):
        self.predicate = predicate
        self.deadline = time.monotonic() + timeout
        self.interval = interval


class Task:
    def __init__(self, loop, steps, log_error):
        self._loop = loop
        self._steps = steps
        self._log_error = log_error
        self.done = False
        self.answers_a_call = False  # an XML-RPC client waits on it through a deferred (see run)
        self._result = None
        self._error = None
        self._waiting = None
        self._advance(None, None)

    def outcome(self):
        if self._error is not None:
            raise self._error
        return self._result

    def _advance(self, value, error):
        try:
            if error is None:
                step = self._steps.send(value)
            else:
                step = self._steps.throw(error)
        except StopIteration as stop:
            self._finish(stop.value, None)
        except RPCError as exc:
            self._finish(None, exc)
        except Exception as exc:
            self._finish(None, unexpected_fault(exc, self._log_error))
        else:
            self._wait_for(step)

    def _wait_for(self, step):
        if isinstance(step, Future) and step.done():
            self._resume(step)  # no trip through the loop for what is already there
        elif isinstance(step, Future):
            step.add_done_callback(lambda f: self._loop.call_soon(lambda: self._resume(f)))
        elif isinstance(step, Wait):
            self._poll(step)
        else:
            self._advance(None, TypeError("a step must yield a Future or a Wait, not %r" % (step,)))

    def _resume(self, future):
        error = future.exception()
        if error is None:
            self._advance(future.result(), None)
        else:
            self._advance(None, error)

    def _poll(self, wait):
        """Check ``wait`` now, after every wake of the loop, and every ``interval`` s."""
        if self._check(wait):
            return
        self._waiting = wait
        self._loop.pollers.add(self._recheck)
        self._loop.call_later(wait.interval, lambda: self._tick(wait))

    def _tick(self, wait):
        if self._waiting is wait and not self._check(wait):
            self._loop.call_later(wait.interval, lambda: self._tick(wait))

    def _recheck(self):
        if self._waiting is not None:
            self._check(self._waiting)

    def _check(self, wait):
        """True if the wait is over (and the task has moved on)."""
        try:
            held = bool(wait.predicate())
        except Exception as exc:
            self._stop_waiting()
            self._advance(None, exc)
            return True
        if held or time.monotonic() >= wait.deadline:
            self._stop_waiting()
            self._advance(held, None)
            return True
        return False

    def _stop_waiting(self):
        self._waiting = None
        self._loop.pollers.discard(self._recheck)

    def _finish(self, result, error):
        self.done = True
        self._result = result
        self._error = error
        self._loop.recheck()  # for a Wait on this task
        if self.answers_a_call:
            # supervisord looks at a pending deferred only when its loop wakes and at
            # most every DEFERRED_DELAY seconds: answer now
            ask_pending_deferreds_now()


def ask_pending_deferreds_now():
    """Ask every HTTP channel that waits on a deferred answer for it now (main thread only), as
    supervisord's loop would at its next pass once the channel's ``delay`` has passed since its
    last check: a finished call is answered in this pass, not one or two passes later.  A
    channel whose call is not done yet just asks once more."""
    for channel in list(asyncore.socket_map.values()):
        if isinstance(channel, deferring_http_channel) and channel.delay:
            channel.last_writable_check = 0
            try:
                channel.initiate_send()
            except Exception:
                channel.handle_error()


def _postpone_first_deferred_checks():
    """supervisord asks a new deferred for its answer at the first pass after the call, and the
    pass it takes to ask is spent for nothing: the answer is pushed (ask_pending_deferreds_now)
    when it is there.  Called before the channels are looked at in that pass: their regular
    checks, every DEFERRED_DELAY seconds, remain."""
    now = time.time()
    for channel in list(asyncore.socket_map.values()):
        if isinstance(channel, deferring_http_channel) and channel.delay and not channel.last_writable_check:
            channel.last_writable_check = now


def unexpected_fault(exc, log_error):
    """A FAILED fault for a bug; the traceback goes to supervisord's log."""
    log_error("meshx: unexpected error: %s" % traceback.format_exc())
    return MeshxFault("FAILED", "%s: %s" % (type(exc).__name__, exc))


def call(fn, log_error):
    """Run a main-loop-only RPC body; a bug gives a FAILED fault, not HTTP 500."""
    try:
        return fn()
    except RPCError:
        raise
    except Exception as exc:
        raise unexpected_fault(exc, log_error)


def run(loop, steps, log_error, present=lambda value: value):
    """Start ``steps``; return ``present(result)`` now if it finished, else a deferred."""
    task = Task(loop, steps, log_error)
    if task.done:
        return present(task.outcome())
    task.answers_a_call = True

    def deferred():
        if not task.done:
            return NOT_DONE_YET
        return present(task.outcome())

    deferred.delay = DEFERRED_DELAY
    loop.call_on_next_pass(_postpone_first_deferred_checks)
    return deferred
