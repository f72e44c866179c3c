"""Starting a proxy's process without a fork of supervisord.

supervisord forks, then sets the child up and execs.  A fork of a large
supervisord is expensive for supervisord itself: at 300 proxies (~45 MiB) the
fork takes 2-3 ms, and every page supervisord writes afterwards costs it a page
fault (its pages are shared copy-on-write until the child has exec'd): ~10 ms
more over the next pass of its loop.  ``subprocess`` starts a child with
``vfork`` (no change of user), which copies nothing; with Python 3.11 and
later (``process_group``) proxies are started so.

``start_child`` sets the child up as supervisord's ``_spawn_as_child`` does:
its own process group, the process's pipes as its stdin, stdout and stderr,
every other descriptor closed, supervisord's environment with the
``SUPERVISOR_*`` variables and the program's own, then the exec of the file
supervisord checked.  A config that needs more (a user, a directory, a
umask) is started by supervisord's fork.
"""
import errno
import os
import subprocess
import sys

AVAILABLE = sys.version_info >= (3, 11)  # Popen's process_group


def can_start(config):
    """Whether ``start_child`` does all that supervisord's child would do for ``config``."""
    return AVAILABLE and config.uid is None and config.directory is None and config.umask is None


def start_child(process, filename, argv):
    """Start ``process``'s child (``Subprocess.pipes`` made already) running ``filename`` with
    ``argv``; its pid.  An OSError if it could not be started (nothing is left running then)."""
    pipes = process.pipes
    stderr = pipes["child_stdout"] if process.config.redirect_stderr else pipes["child_stderr"]
    try:
        child = subprocess.Popen(argv, executable=filename, stdin=pipes["child_stdin"], stdout=pipes["child_stdout"],
                                 stderr=stderr, env=environment(process), close_fds=True, process_group=0,
                                 restore_signals=False)  # as a forked child: what supervisord ignores stays so
    except (ValueError, subprocess.SubprocessError) as exc:  # supervisord's spawn handles an OSError only
        raise OSError(errno.EINVAL, str(exc))
    child._child_created = False  # supervisord reaps it: the Popen object must never wait for it
    return child.pid


def environment(process):
    """The environment supervisord gives a process it spawns."""
    config = process.config
    env = dict(os.environ, SUPERVISOR_ENABLED="1", SUPERVISOR_PROCESS_NAME=config.name)
    server_url = config.serverurl if config.serverurl is not None else config.options.serverurl
    if server_url:
        env["SUPERVISOR_SERVER_URL"] = server_url
    if process.group:
        env["SUPERVISOR_GROUP_NAME"] = process.group.config.name
    if config.environment is not None:
        env.update(config.environment)
    return env
