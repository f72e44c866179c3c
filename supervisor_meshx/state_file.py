"""The plugin's state on disk, so that reloads, restarts and crashes lose nothing.

Every change is written atomically (write a temporary file, fsync, rename)
by a worker thread; the main loop only hands over a snapshot.  A corrupt or
unreadable file is reported and set aside (renamed ``.corrupt-<time>``),
never a crash.
"""
import json
import os
import threading
import time

VERSION = 1


class StateFile:
    def __init__(self, path, loop, log):
        self.path = path
        self._loop = loop
        self._log = log
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # keeps an older snapshot from landing last
        self._pending = None
        self._writing = False

    def load(self):
        """The saved state, or an empty one; main thread, at start-up only."""
        try:
            with open(self.path) as f:
                state = json.load(f)
            if not isinstance(state, dict) or state.get("version") != VERSION \
                    or not isinstance(state.get("services"), dict):
                raise ValueError("not a supervisor-meshx state file of version %d" % VERSION)
            return state
        except FileNotFoundError:
            return empty_state()
        except (OSError, ValueError) as exc:
            aside = "%s.corrupt-%d" % (self.path, time.time())
            try:
                os.replace(self.path, aside)
            except OSError:
                aside = "(could not be moved)"
            self._log("meshx: state file %s unreadable (%s); set aside as %s" % (self.path, exc, aside))
            return empty_state()

    def save(self, state):
        """Queue ``state`` (a JSON-ready snapshot nobody changes any more) for
        writing; the newest one wins.  Serialised on the worker, off the main loop."""
        with self._lock:
            self._pending = state
            if self._writing:
                return
            self._writing = True
        self._loop.submit(self._write_pending)

    def flush(self):
        """Write any pending state now, on the calling thread (used at shutdown)."""
        self._write_pending()

    def _write_pending(self):
        with self._write_lock:
            while True:
                with self._lock:
                    state, self._pending = self._pending, None
                    if state is None:
                        self._writing = False
                        return
                try:
                    self._write(json.dumps(state, sort_keys=True))
                except OSError as exc:
                    self._log("meshx: cannot write state file %s: %s" % (self.path, exc))

    def _write(self, text):
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        temporary = "%s.tmp-%d" % (self.path, os.getpid())
        with open(temporary, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def empty_state():
    return {"version": VERSION, "services": {}}
