"""What marks a registration or a process as this supervisord's own.

Registrations carry ``Meta`` keys naming the node and this supervisord
instance, so that after a crash or a lost state file the plugin can adopt or
collect its own registrations and never touches anyone else's.  Processes
carry environment variables naming their service and the instance (an
``exec`` keeps them, so an Envoy started by ``consul connect envoy`` has
them too) and are recorded with their pid and start time, which ``exec``
does not change either; a pid whose start time differs is a new process
and is never signalled.

The instance identity is derived from the node name and the state file's
path: stable across restarts and a lost state file, distinct for two
supervisords on one host.
"""
import hashlib
import os
import signal
import time

NODE_KEY = "meshx-node"
INSTANCE_KEY = "meshx-instance"
ENV_SERVICE = "MESHX_SERVICE_ID"
ENV_INSTANCE = "MESHX_INSTANCE"


def instance_id(node_name, state_path):
    text = "%s\0%s" % (node_name, os.path.abspath(state_path))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def marker(node_name, instance):
    """The Meta keys every registration of this instance carries."""
    return {NODE_KEY: node_name, INSTANCE_KEY: instance}


def process_environment(instance, service_id):
    return {ENV_INSTANCE: instance, ENV_SERVICE: service_id}


def start_time(pid):
    """The process's start time in clock ticks since boot (``/proc/PID/stat``
    field 22), or None if there is no such process (or it is a zombie)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rfind(b")") + 2:].split()  # the command name may hold spaces and ')'
    if len(fields) < 20 or fields[0] == b"Z":
        return None
    return int(fields[19])


def _environment(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _parent(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
        return int(stat[stat.rfind(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def find_orphans(instance, recorded):
    """Processes of this instance not started by this supervisord: those whose
    environment names the instance, and the recorded ``(pid, start_time)``
    still alive with that start time.  A dict pid -> start time."""
    me = os.getpid()
    found = {}
    for pid, started in recorded:
        if isinstance(pid, int) and pid > 1 and pid != me and started is not None \
                and start_time(pid) == started:
            found[pid] = started
    wanted = ("%s=%s" % (ENV_INSTANCE, instance)).encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in found or pid == me or _parent(pid) == me:
            continue
        if wanted in _environment(pid):
            started = start_time(pid)
            if started is not None:
                found[pid] = started
    return found


def stop_orphans(orphans, grace):
    """TERM each orphan (its process group if it leads one), KILL after ``grace`` s.
    Returns the pids signalled.  Blocking: run it on a worker thread."""
    signalled = [pid for pid, started in orphans.items() if _signal(pid, started, signal.SIGTERM)]
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(start_time(p) == orphans[p] for p in signalled):
        time.sleep(0.05)
    for pid in signalled:
        _signal(pid, orphans[pid], signal.SIGKILL)
    return signalled


def _signal(pid, started, sig):
    if start_time(pid) != started:
        return False  # gone, or the pid now belongs to another process
    try:
        if os.getpgid(pid) == pid and pid != os.getpgrp():
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
        return True
    except OSError:
        return False
