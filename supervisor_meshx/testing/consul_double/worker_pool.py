"""A few threads that run blocking jobs (TCP and HTTP probes) so that the scheduler thread never blocks."""

import queue
import threading
import traceback


class WorkerPool:
    """Starts a thread only when every thread is busy, up to ``limit``; jobs wait in a queue beyond that."""

    def __init__(self, name, limit):
        self._name = name
        self._limit = limit
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(self, job):
        with self._lock:
            if self._idle:
                self._idle -= 1  # that thread takes this job
            elif self._threads < self._limit:
                self._threads += 1
                threading.Thread(target=self._work, args=(self._jobs,), daemon=True,
                                 name="%s-%d" % (self._name, self._threads)).start()
            self._jobs.put(job)

    def stop(self):
        """Ends the threads once the jobs already queued are done; later jobs go to new threads."""
        with self._lock:
            threads, self._threads, self._idle = self._threads, 0, 0
            jobs, self._jobs = self._jobs, queue.SimpleQueue()
        for _ in range(threads):
            jobs.put(None)

    def _work(self, jobs):
        while True:
            job = jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:
                traceback.print_exc()
            with self._lock:
                if jobs is self._jobs:  # else stopped meanwhile: only the queue's end is left to take
                    self._idle += 1
