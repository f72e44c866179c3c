"""One thread that runs actions at their deadlines: the TTL expiries and probe starts of an agent's checks."""

import heapq
import itertools
import threading
import time
import traceback


class ScheduledAction:
    """A deadline in the scheduler's heap; cancelling it leaves the entry to be skipped when it comes up."""

    __slots__ = ("action", "cancelled", "_scheduler")

    def __init__(self, action, scheduler):
        self.action = action
        self.cancelled = False
        self._scheduler = scheduler

    def cancel(self):
        if not self.cancelled:
            self.cancelled = True
            self._scheduler.forget_one()


class DeadlineScheduler:
    """A heap of (deadline, sequence, action) and a thread that runs each action when its deadline passes.

    Deadlines are time.monotonic() values.  Stopping keeps the heap: what fell due meanwhile runs at start."""

    def __init__(self, name):
        self._name = name
        self._heap = []
        self._sequence = itertools.count()
        self._cancelled = 0
        self._wakeup = threading.Condition(threading.Lock())
        self._thread = None
        self._running = False

    def call_at(self, deadline, action):
        scheduled = ScheduledAction(action, self)
        with self._wakeup:
            entry = (deadline, next(self._sequence), scheduled)
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._wakeup.notify()
        return scheduled

    def forget_one(self):
        """A cancelled entry: rebuild the heap when those outnumber the live ones (an often re-armed TTL)."""
        with self._wakeup:
            self._cancelled += 1
            if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def start(self):
        with self._wakeup:
            if self._running:
                return
            self._running = True
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self):
        with self._wakeup:
            self._running = False
            self._wakeup.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None

    def _run(self):
        while True:
            scheduled = self._next_due()
            if scheduled is None:
                return
            try:
                scheduled.action()
            except Exception:
                traceback.print_exc()

    def _next_due(self):
        with self._wakeup:
            while self._running:
                if not self._heap:
                    self._wakeup.wait()
                    continue
                deadline, _, scheduled = self._heap[0]
                if scheduled.cancelled:
                    heapq.heappop(self._heap)
                    self._cancelled -= 1
                    continue
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    self._wakeup.wait(remaining)
                    continue
                heapq.heappop(self._heap)
                scheduled.cancelled = True  # ran: a later cancel() has nothing to forget
                return scheduled
            return None
