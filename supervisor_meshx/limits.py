"""How much one call may carry: sizes a real proxy and a real template need,
and far less than what would make supervisord (single-threaded) stall.
Checked before any work, in time proportional to the limit, not the input."""
from supervisor_meshx.faults import MeshxFault

MAX_ARGS = 128  # arguments of one proxy command
MAX_ARG = 4096  # characters of one argument
MAX_ARGV = 32 * 1024  # characters of a whole proxy command
MAX_SERVICE = 16 * 1024  # characters in one service's variables
MAX_TEMPLATE = 64 * 1024  # characters in one template
MAX_UPSTREAMS = 1000  # upstreams in one connect/disconnect call
MAX_BATCH_SIZE = 2 * 1024 * 1024  # characters in all of startMany's services together


def check_argv(cmd):
    if len(cmd) > MAX_ARGS:
        raise MeshxFault("BAD_ARGUMENTS", "cmd has more than %d arguments (limit)" % MAX_ARGS)
    total = 0
    for arg in cmd:
        if len(arg) > MAX_ARG:
            raise MeshxFault("BAD_ARGUMENTS", "a cmd argument is longer than %d characters (limit)" % MAX_ARG)
        total += len(arg)
    if total > MAX_ARGV:
        raise MeshxFault("BAD_ARGUMENTS", "cmd is longer than %d characters (limit)" % MAX_ARGV)


def check_size(value, limit, what):
    """Raise BAD_ARGUMENTS if ``value`` (JSON-like data) holds more than ``limit``
    characters of strings and keys (each item counts at least 1)."""
    budget = limit
    pending = [value]
    while pending:
        node = pending.pop()
        budget -= len(node) if isinstance(node, str) else 1
        if budget < 0:
            raise MeshxFault("BAD_ARGUMENTS", "%s is larger than %d characters (limit)" % (what, limit))
        if isinstance(node, dict):
            pending.extend(node.keys())
            pending.extend(node.values())
        elif isinstance(node, (list, tuple)):
            pending.extend(node)
