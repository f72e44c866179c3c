"""The plugin's state on disk: desired state first, so that reloads, restarts
and crashes lose nothing.

``save()`` asks for the current state to be written and returns a future
that is done once it (or a newer state) is on disk: written atomically (a
temporary file of mode 0600, fsync, rename, fsync of the directory) by a
worker thread.  All the saves asked for in one pass of the main loop share
one snapshot, taken at the end of that pass (no extra wake), and one write.  A failed write is retried with a growing delay
until it succeeds; the failure and its end are logged once each.

A snapshot costs what changed, not what there is: every entry of a section
comes with a fingerprint (see ``Versioned``), and only an entry whose
fingerprint moved is made (main thread) and encoded (the writer) again.

The file is untrusted input: an unreadable file is reported and set aside
(renamed ``.corrupt-<time>``, only if it is a regular file), and
``check_path`` refuses at start-up a path that is a directory, is not a
regular file or lies in a directory that does not exist.
"""
import collections
import itertools
import json
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


_versions = itertools.count(1)


class Versioned:
    """An object whose ``version`` moves, to a number never used before in this
    process, at every assignment to one of its attributes: the fingerprint of
    its state file entry.  Its fields are therefore replaced, never changed in
    place (a change in place would not reach the file)."""

    version = 0

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        object.__setattr__(self, "version", next(_versions))


class StateFile:
    def __init__(self, path, loop, snapshot, log):
        """``snapshot()``: the state to write, called on the main thread: a dict of JSON-ready
        values and ``Section``s."""
        self.path = path
        self._loop = loop
        self._snapshot = snapshot
        self._encoder = SnapshotEncoder()
        self._log = log
        self._lock = threading.Lock()
        self._next = None  # future of the snapshot still to be taken
        self._pending = None  # (Snapshot, futures) to write
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
        future, self._next = self._next, None
        self._queue(future)
        self._write_pending()

    def _take_snapshot(self):
        future, self._next = self._next, None
        if future is not None and not self._queue(future):
            self._loop.submit(self._write_pending, wake=False)  # a Task waiting on a save wakes itself

    def _queue(self, future):
        """Take a snapshot to write next (main thread); whether a writer is at work already."""
        snapshot = self._encoder.take(self._snapshot())
        with self._lock:
            futures = [future] if future is not None else []
            if self._pending is not None:  # never encoded: its changes go with this one
                snapshot = snapshot.after(self._pending[0])
                futures = self._pending[1] + futures
            self._pending = (snapshot, futures)
            writing, self._writing = self._writing, True
        return writing

    def _write_pending(self):
        """Write until nothing is pending.  Two writers (flush meeting a worker) take turns: a
        snapshot is taken from the queue and encoded under one lock, so in the order taken."""
        while True:
            try:
                futures = self._write_next()
            except Exception as exc:  # OSError, or a bug: saves fail and are retried, never hang
                self._failed(exc)
                return
            if futures is None:
                return
            if self._failing:
                self._failing = False
                self._retry_delay = RETRY_FIRST
                self._log("meshx: state file %s written again" % self.path)
            for future in futures:
                future.set_result(True)

    def _write_next(self):
        """Encode and write the pending snapshot; its futures, or None (no writer at work any
        more) if nothing is pending.  A failed write raises, its state pending again."""
        with self._write_lock:
            with self._lock:
                pending, self._pending = self._pending, None
                if pending is None:
                    self._writing = False
                    return None
            snapshot, futures = pending
            try:
                self._write_file(self._encoder.encode(snapshot))
            except Exception as exc:
                with self._lock:  # written again, with whatever came since
                    newer = self._pending
                    self._pending = (newer[0].after(snapshot), newer[1]) if newer else (snapshot, [])
                for future in futures:
                    future.set_exception(MeshxFault("FAILED", "cannot write state file %s: %s" % (self.path, exc)))
                raise
            return futures

    def _failed(self, exc):
        if not self._failing:
            self._failing = True
            self._log("meshx: cannot write state file %s: %s; retrying until it can" % (self.path, exc))
        with self._lock:
            self._writing = False
        delay, self._retry_delay = self._retry_delay, min(RETRY_MAX, self._retry_delay * 2)
        self._loop.call_later(delay, self._retry)

    def _retry(self):
        with self._lock:
            if self._writing or self._pending is None:
                return
            self._writing = True
        self._loop.submit(self._write_pending, wake=False)

    def _write_file(self, data):
        # few system calls: each one gives up the interpreter, and getting it back can take a
        # switch interval while supervisord's thread is in a pass
        data = memoryview(data)
        temporary = "%s.tmp-%d" % (self.path, os.getpid())
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temporary, flags, 0o600)
        except FileExistsError:  # left by a write cut short
            os.unlink(temporary)
            fd = os.open(temporary, flags, 0o600)
        try:
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        dir_fd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# A section of the state: ``entries`` (key -> object), each one's fingerprint
# (``fingerprint(object)``, hashable) and its JSON-ready value (``make(object)``, asked for on the
# main thread only when the fingerprint moved).
Section = collections.namedtuple("Section", "entries fingerprint make")


class Snapshot:
    """One state as the encoder needs it: its plain values, each section's keys, and the
    values of the entries that changed since the snapshot before it."""

    def __init__(self, values, sections, changed):
        self.values = values  # name -> JSON-ready value
        self.sections = sections  # name -> keys
        self.changed = changed  # (section, key) -> JSON-ready value

    def after(self, older):
        """This snapshot with the changes of ``older``, which was never encoded."""
        changed = dict(older.changed)
        changed.update(self.changed)
        return Snapshot(self.values, self.sections, changed)


class SnapshotEncoder:
    """JSON of a state (sorted keys, as ``json.dumps(state, sort_keys=True)``, as bytes) in two
    halves: ``take`` on the main thread makes the entries whose fingerprint moved, ``encode`` on
    the writer (one at a time, in the order taken) re-encodes only those.  With a thousand
    services, making and encoding every entry for each save held the interpreter for tens of
    milliseconds against supervisord's loop; the file's bytes are joined once, from each entry's
    bytes kept from its last encoding."""

    def __init__(self):
        self._fingerprints = {}  # main thread: section -> key -> fingerprint of the entry last made
        self._texts = {}  # writer: section -> key -> the entry's bytes in the file, after a comma

    def take(self, state):
        """A Snapshot of ``state``: its values and Sections."""
        values, sections, changed, fingerprints = {}, {}, {}, {}
        for name, value in state.items():
            if not isinstance(value, Section):
                values[name] = value
                continue
            entries = value.entries
            sections[name] = list(entries)
            now = fingerprints[name] = {key: value.fingerprint(item) for key, item in entries.items()}
            for key, _ in now.items() - self._fingerprints.get(name, {}).items():
                changed[name, key] = value.make(entries[key])
        self._fingerprints = fingerprints
        return Snapshot(values, sections, changed)

    def encode(self, snapshot):
        for (name, key), value in snapshot.changed.items():
            self._texts.setdefault(name, {})[key] = (
                ", %s: %s" % (json.dumps(key), json.dumps(value, sort_keys=True))).encode("utf-8")
        # one join of every entry's bytes (each kept with the ", " before it, dropped for the first
        # one of a section): each large buffer is fresh memory to fault in, at every save
        parts = []
        for name in sorted(list(snapshot.values) + list(snapshot.sections)):
            parts += [b", " if parts else b"{", json.dumps(name).encode("utf-8"), b": "]
            if name in snapshot.sections:
                keys = snapshot.sections[name]
                texts = self._texts.setdefault(name, {})
                entries = [texts[key] for key in sorted(keys)]
                if entries:
                    entries[0] = entries[0][2:]
                parts += [b"{"] + entries + [b"}"]
                if len(texts) > len(keys):  # entries gone
                    for gone in texts.keys() - set(keys):
                        del texts[gone]
            else:
                parts.append(json.dumps(snapshot.values[name], sort_keys=True).encode("utf-8"))
        parts.append(b"}" if parts else b"{}")
        return b"".join(parts)



def empty_state():
    return {"version": VERSION, "services": {}}
