"""The processes the harness starts, their /proc readings, and killing them all.

Every child is started in a session of its own (``start_new_session``).
supervisord's children call ``setpgrp`` but stay in that session, so sweeping
the session finds every proxy, program and helper, even after supervisord
itself died.  ``kill_all`` runs at the end of a run, on errors (try/finally)
and at interpreter exit (atexit); it only ever signals processes in the
sessions of children this harness started.
"""
import atexit
import os
import signal
import subprocess
import threading
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

_lock = threading.Lock()
_children = []  # Popen objects, each the leader of its own session


def spawn(argv, **kwargs):
    """Popen ``argv`` in a new session and remember it for clean-up."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    proc = subprocess.Popen(argv, start_new_session=True, env=local_only_env(), **kwargs)
    with _lock:
        _children.append(proc)
    return proc


def local_only_env():
    """The environment for children: no HTTP proxy settings, so nothing leaves 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def session_members(sid):
    """Pids of the live processes in session ``sid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry))
        except OSError:
            continue
        # fields after the command: state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry))
    return members


def stop(proc, grace=20.0):
    """SIGTERM the session leader, wait up to ``grace`` s, then SIGKILL what is left of its session.

    Returns the seconds the leader took to exit after SIGTERM, None if it had to be killed
    (or had exited already).
    """
    took = None
    if proc.poll() is None:
        began = time.monotonic()
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(grace)
            took = time.monotonic() - began
        except subprocess.TimeoutExpired:
            pass
        except OSError:
            pass
    _sweep(proc)
    return took


def _sweep(proc):
    sid = proc.pid
    for _ in range(50):
        members = session_members(sid)
        if not members:
            break
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)
    if proc.poll() is None:
        try:
            proc.kill()
        except OSError:
            pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
    with _lock:
        if proc in _children:
            _children.remove(proc)


def kill_all(grace=5.0):
    """Stop every child still known (newest first) and sweep its session."""
    with _lock:
        children = list(reversed(_children))
    for proc in children:
        try:
            stop(proc, grace)
        except Exception:  # clean-up must go on
            pass


def _stat_fields(pid):
    with open("/proc/%d/stat" % pid) as f:
        text = f.read()
    # the command may contain spaces and parentheses: split after its last ')'
    return text[text.rindex(")") + 2:].split()


def cpu_seconds(pid):
    """utime + stime of the process (all its threads), in seconds."""
    fields = _stat_fields(pid)
    # fields[0] is field 3 (state) of proc(5): utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / float(CLOCK_TICKS)


def rss_kb(pid):
    """VmRSS of the process, in kB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def install_cleanup():
    """Kill everything at exit, and turn SIGTERM/SIGHUP into an exit that runs finally blocks."""
    atexit.register(kill_all)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    # Ctrl-C raises KeyboardInterrupt even when started in the background, where SIGINT comes ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
