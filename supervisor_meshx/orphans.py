"""Proxies left running by a supervisord that was killed.

supervisord starts every proxy in its own process group.  If supervisord
is SIGKILLed its proxies keep running, and the next supervisord would start
a second proxy fighting the first over its ports.  At start-up the plugin
looks up each proxy recorded in its state file: a live process with that pid
whose command line ends with the recorded argv (a script started through its
``#!`` interpreter gets the interpreter in front) is stopped, group and all.
Runs on a worker thread: it waits for the processes to exit.
"""
import os
import signal
import time


def command_line(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def is_orphan(pid, argv):
    cmdline = command_line(pid) if pid > 0 else None
    return bool(cmdline) and bool(argv) and cmdline[-len(argv):] == argv


def stop_orphans(recorded, grace):
    """Stop each live ``(pid, argv)``; SIGKILL after ``grace`` seconds. Returns the pids stopped."""
    orphans = [pid for pid, argv in recorded if is_orphan(pid, argv)]
    for pid in orphans:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in orphans):
        time.sleep(0.05)
    for pid in orphans:
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
    return orphans


def _signal_group(pid, sig):
    try:
        os.killpg(pid, sig)
    except OSError:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _alive(pid):
    cmdline = command_line(pid)
    return cmdline is not None and cmdline != []  # a zombie has an empty command line
