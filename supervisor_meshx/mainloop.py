"""The bridge between worker threads and supervisord's single-threaded loop.

supervisord runs everything on one thread and blocks in ``poll(1)`` between
iterations.  Slow work (Consul HTTP calls) runs on a thread pool; results come
back to the main thread through a queue, and a pipe registered in supervisord's
socket map wakes the loop at once instead of up to a second later.
"""
import ctypes
import heapq
import itertools
import os
import queue
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from supervisor.medusa import asyncore_25 as asyncore

WORKERS = 16  # threads for Consul calls, state writes and orphan checks
# How long a worker thread may keep the interpreter while supervisord's thread waits for it
# (Python's default is 5 ms: a getState could wait that long behind a batch of TTL updates).
SWITCH_INTERVAL = 0.001
RECHECK_ROUNDS = 10  # rounds of queued calls and pollers in one wake; then one more wake
M_ARENA_MAX = -8  # glibc's mallopt parameter
MALLOC_ARENAS = 1


class _WakePipe:
    """A dispatcher in supervisord's socket map; reading it runs queued calls.

    supervisord asks every dispatcher ``readable()`` once per pass of its loop,
    before it polls: that is where the calls that may wait for the next pass run.
    """

    def __init__(self, on_wake, on_pass):
        self._on_wake = on_wake
        self._on_pass = on_pass
        self._written = False
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)

    def readable(self):
        self._on_pass()
        return True

    def writable(self):
        return False

    def handle_read_event(self):
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        # after the pipe is empty and before the queue is read: a wake from now on writes again,
        # and whatever was queued without writing (the flag was still set) is run just below
        self._written = False
        self._on_wake()

    def handle_write_event(self):
        pass

    def handle_error(self):
        pass

    def wake(self):
        if self._written:
            return  # one byte not read yet wakes the loop as well as many
        self._written = True
        try:
            os.write(self.write_fd, b"x")
        except (BlockingIOError, OSError):
            pass  # a full pipe already guarantees a wake; a closed one is being replaced

    def close(self):
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


class MainLoop:
    """Runs work off supervisord's loop and brings results back onto it.

    ``submit`` runs a function on a worker thread; ``call_soon`` (any thread)
    and ``call_later`` (any thread) queue a function for the main thread;
    ``call_on_next_pass`` (any thread) too, without waking the loop: every wake
    costs supervisord a pass over all its processes, and it passes at least
    once a second anyway; queued during a pass, it runs at that pass's end, or
    queued by a queued call, once the queued calls have run.
    ``submit_after`` chains worker jobs without a trip through the loop.
    The pipe is attached when supervisord starts running and detached when it
    stops or reloads, because a reload closes every inherited descriptor.
    """

    def __init__(self, log_error):
        self._log_error = log_error
        self._executor, self._timers = _process_wide()
        self._calls = queue.SimpleQueue()
        self._next_pass_calls = queue.SimpleQueue()
        self._pipe = None
        self._lock = threading.Lock()
        self.pollers = set()  # main-thread checks re-run after every wake (see tasks.Wait)
        self._running = False  # run_pending is under way
        self._recheck = False

    def attach(self):
        with self._lock:
            if self._pipe is None:
                self._pipe = _WakePipe(self.run_pending, self._run_next_pass_calls)
                asyncore.socket_map[self._pipe.read_fd] = self._pipe
        self.wake()

    def detach(self):
        with self._lock:
            pipe, self._pipe = self._pipe, None
        if pipe is not None:
            asyncore.socket_map.pop(pipe.read_fd, None)
            pipe.close()

    def wake(self):
        pipe = self._pipe
        if pipe is not None:
            pipe.wake()

    def submit(self, fn, *args, wake=True):
        """A future of ``fn(*args)`` run on a worker thread; ``wake``: wake the loop when it is done."""
        future = self._executor.submit(fn, *args)
        if wake:
            future.add_done_callback(lambda _f: self.wake())
        return future

    def submit_after(self, first, fn, *args):
        """A future of ``fn(*args)`` run on a worker thread once the future ``first`` has
        succeeded (``first``'s exception if it failed); it wakes the loop when done."""
        chained = Future()

        def start(done):
            if done.exception() is not None:
                chained.set_exception(done.exception())
            else:
                self._executor.submit(fn, *args).add_done_callback(_copy_outcome(chained))
        first.add_done_callback(start)
        chained.add_done_callback(lambda _f: self.wake())
        return chained

    def call_soon(self, fn):
        self._calls.put(fn)
        self.wake()

    def call_on_next_pass(self, fn):
        self._next_pass_calls.put(fn)

    def call_later(self, delay, fn):
        self._timers.add(delay, lambda: self.call_soon(fn))

    def recheck(self):
        """Main thread: have the pollers checked again (something they may wait on happened):
        before the run of the queued calls and pollers under way ends, else at a wake."""
        if self._running:
            self._recheck = True
        else:
            self.wake()

    def run_pending(self):
        """Run the queued calls, then the pollers, until nothing asks for a recheck, then the
        calls left for the pass's end; main thread only.  Errors are logged, never raised."""
        self._running = True
        try:
            for _ in range(RECHECK_ROUNDS):
                self._recheck = False
                self._run_queued(self._calls)
                for poll in list(self.pollers):
                    self._run(poll)
                if not self._recheck:
                    break
            else:
                self.wake()
            # what these calls left for the pass's end (a state snapshot, a TTL tick): now, not
            # after supervisord has looked at every process
            self._run_next_pass_calls()
        finally:
            self._running = False

    def _run_next_pass_calls(self):
        self._run_queued(self._next_pass_calls)

    def _run_queued(self, calls):
        while True:
            try:
                fn = calls.get_nowait()
            except queue.Empty:
                return
            self._run(fn)

    def _run(self, fn):
        try:
            fn()
        except Exception as exc:  # an exception here would kill supervisord
            self._log_error("meshx: internal error in %r: %r" % (fn, exc))


def _copy_outcome(target):
    def copy(source):
        if source.exception() is not None:
            target.set_exception(source.exception())
        else:
            target.set_result(source.result())
    return copy


_shared = None


def _process_wide():
    """One thread pool and one timer thread for the process, kept across reloads
    (each reload makes a new plugin instance; new threads each time would pile up)."""
    global _shared
    if _shared is None:
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        _share_malloc_arenas()
        _shared = (ThreadPoolExecutor(WORKERS, thread_name_prefix="meshx"), _Timers())
    return _shared


def _share_malloc_arenas():
    """glibc gives each thread that allocates its own malloc arena (up to 8 per core), each
    keeping freed memory of its own: the pool's threads would add ~12 MiB to supervisord's RSS
    at 1,000 services.  They share supervisord's instead (its own thread hardly competes)."""
    try:
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError):
        pass  # not glibc


class _Timers:
    """One thread that runs each function (quickly, e.g. MainLoop.call_soon) once its delay has passed.

    The thread starts on first use, after supervisord has daemonized (threads
    started before the fork would not exist in the daemon).
    """

    def __init__(self):
        self._heap = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._thread = None

    def add(self, delay, fn):
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), fn))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="meshx-timers", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self):
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                _when, _order, fn = heapq.heappop(self._heap)
            fn()
