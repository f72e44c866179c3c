"""The plugin's state on disk: desired state first, so that reloads, restarts
and crashes lose nothing.

``save()`` asks for the current state to be written and returns a future
that is done once it (or a newer state) is on disk: written atomically (a
temporary file of mode 0600, fsync, rename, fsync of the directory) by a
worker thread.  All the saves asked for in one pass of the main loop share
one snapshot, taken at the end of that pass (no extra wake), and one write.  A failed write is retried with a growing delay
until it succeeds; the failure and its end are logged once each.

The file is untrusted input: an unreadable file is reported and set aside
(renamed ``.corrupt-<time>``, only if it is a regular file), and
``check_path`` refuses at start-up a path that is a directory, is not a
regular file or lies in a directory that does not exist.
"""
import json
import marshal
import os
import stat
import threading
import time
from concurrent.futures import Future

from supervisor_meshx.faults import MeshxFault

VERSION = 1
RETRY_FIRST, RETRY_MAX = 0.5, 30.0  # seconds between attempts at a failed write


def check_path(path):
    """Raise ValueError unless ``path`` can be the state file."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError("state_file %s: directory %s does not exist" % (path, directory))
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise ValueError("state_file %s is a directory" % path)
    if not stat.S_ISREG(mode):
        raise ValueError("state_file %s is not a regular file" % path)


class StateFile:
    def __init__(self, path, loop, snapshot, log):
        """``snapshot()``: the state to write, JSON-ready; called on the main thread."""
        self.path = path
        self._loop = loop
        self._snapshot = snapshot
        self._encoder = SnapshotEncoder()
        self._log = log
        self._lock = threading.Lock()
        self._next = None  # future of the snapshot still to be taken
        self._pending = None  # (state, sequence number, futures) to write
        self._taken = 0  # sequence number of the newest snapshot taken
        self._written = 0  # ... and of the newest on disk: an older one never overwrites it
        self._writing = False
        self._failing = False
        self._retry_delay = RETRY_FIRST
        self._write_lock = threading.Lock()  # flush() at shutdown may meet a worker's write

    def load(self):
        """The saved state (a dict, its sections unchecked), or an empty one; main thread."""
        try:
            with open(self.path) as f:
                state = json.load(f)
            if not isinstance(state, dict) or state.get("version") != VERSION:
                raise ValueError("not a supervisor-meshx state file of version %d" % VERSION)
            return state
        except FileNotFoundError:
            return empty_state()
        except (OSError, ValueError) as exc:
            aside = "%s.corrupt-%d" % (self.path, time.time())
            try:
                if not stat.S_ISREG(os.lstat(self.path).st_mode):
                    raise OSError("not a regular file")
                os.replace(self.path, aside)
            except OSError:
                aside = "(could not be moved)"
            self._log("meshx: state file %s unreadable (%s); set aside as %s" % (self.path, exc, aside))
            return empty_state()

    def save(self):
        """Write the current state soon; a Future done when it is on disk
        (its exception: a FAILED fault if the first attempt failed)."""
        if self._next is None:
            self._next = Future()
            self._loop.call_on_next_pass(self._take_snapshot)
        return self._next

    def flush(self):
        """Write the current state now, on the calling (main) thread; used at shutdown."""
        self._next = None
        self._taken += 1
        try:
            self._write(self._encoder.encode(self._snapshot()), self._taken)
        except OSError as exc:
            self._log("meshx: cannot write state file %s: %s" % (self.path, exc))

    def _take_snapshot(self):
        future, self._next = self._next, None
        if future is None:
            return
        state = self._snapshot()
        self._taken += 1
        with self._lock:
            futures = (self._pending[2] if self._pending else []) + [future]
            self._pending = (state, self._taken, futures)
            if self._writing:
                return
            self._writing = True
        self._loop.submit(self._write_pending)

    def _write_pending(self):
        while True:
            with self._lock:
                pending, self._pending = self._pending, None
                if pending is None:
                    self._writing = False
                    return
            state, sequence, futures = pending
            try:
                self._write(self._encoder.encode(state), sequence)
            except OSError as exc:
                self._failed(state, sequence, exc)
                for future in futures:
                    future.set_exception(MeshxFault("FAILED", "cannot write state file %s: %s" % (self.path, exc)))
                return
            if self._failing:
                self._failing = False
                self._retry_delay = RETRY_FIRST
                self._log("meshx: state file %s written again" % self.path)
            for future in futures:
                future.set_result(True)

    def _failed(self, state, sequence, exc):
        if not self._failing:
            self._failing = True
            self._log("meshx: cannot write state file %s: %s; retrying until it can" % (self.path, exc))
        with self._lock:
            if self._pending is None:
                self._pending = (state, sequence, [])
            self._writing = False
        delay, self._retry_delay = self._retry_delay, min(RETRY_MAX, self._retry_delay * 2)
        self._loop.call_later(delay, self._retry)

    def _retry(self):
        with self._lock:
            if self._writing or self._pending is None:
                return
            self._writing = True
        self._loop.submit(self._write_pending)

    def _write(self, text, sequence):
        with self._write_lock:
            if sequence > self._written:  # a worker may come with an older snapshot after flush()
                self._write_file(text)
                self._written = sequence

    def _write_file(self, text):
        directory = os.path.dirname(os.path.abspath(self.path))
        temporary = "%s.tmp-%d" % (self.path, os.getpid())
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class SnapshotEncoder:
    """JSON of a state (sorted keys, as ``json.dumps(state, sort_keys=True)``), re-encoding only
    the entries of its sections that changed since the last time: with a thousand services,
    encoding them all for each save held the interpreter for tens of milliseconds against
    supervisord's loop.  Used by one writer at a time."""

    def __init__(self):
        self._entries = {}  # (section, key) -> (its marshal bytes, its JSON)

    def encode(self, state):
        parts, seen = [], set()
        for name in sorted(state):
            value = state[name]
            if isinstance(value, dict):
                entries = []
                for key in sorted(value):
                    entries.append("%s: %s" % (json.dumps(key), self._entry(name, key, value[key])))
                    seen.add((name, key))
                text = "{%s}" % ", ".join(entries)
            else:
                text = json.dumps(value, sort_keys=True)
            parts.append("%s: %s" % (json.dumps(name), text))
        for gone in set(self._entries) - seen:
            del self._entries[gone]
        return "{%s}" % ", ".join(parts)

    def _entry(self, section, key, value):
        # compared by its marshal bytes: a copy (the caller may change the value in place before the
        # next save) that is compact and quick to make
        fingerprint = marshal.dumps(value)
        cached = self._entries.get((section, key))
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        text = json.dumps(value, sort_keys=True)
        self._entries[(section, key)] = (fingerprint, text)
        return text


def empty_state():
    return {"version": VERSION, "services": {}}
