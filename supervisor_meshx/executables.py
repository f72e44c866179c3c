"""Which programs a proxy command may start.

supervisord often runs as root, and anyone who can reach its XML-RPC
socket could otherwise make it run any program at all.  ``proxy_executables``
lists the programs a proxy may be: absolute paths, or names looked up on
PATH.  A command's program is resolved the same way and compared by real
path (so a symlink and its target are the same program), and the command
runs with the absolute path that was checked as ``argv[0]``.
"""
import os
import shutil

DEFAULT_EXECUTABLES = ("consul", "envoy")


class CommandNotAllowed(Exception):
    pass


class ExecutablePolicy:
    def __init__(self, allowed, search_path=None):
        self.allowed = tuple(allowed)
        self._search_path = search_path

    def _resolve(self, program):
        if os.path.isabs(program):
            found = program if os.access(program, os.X_OK) and os.path.isfile(program) else None
        elif os.sep in program:
            found = None  # relative paths depend on the working directory: never allowed
        else:
            found = shutil.which(program, path=self._search_path)
        return found

    def check(self, argv):
        """Return ``argv`` with its program made absolute, or raise CommandNotAllowed."""
        program = argv[0]
        found = self._resolve(program)
        if found is None:
            raise CommandNotAllowed("%r is not an executable file (absolute path or name on PATH)" % program)
        allowed = {os.path.realpath(path) for path in map(self._resolve, self.allowed) if path}
        if os.path.realpath(found) not in allowed:
            raise CommandNotAllowed("%r is not in proxy_executables (%s)" % (program, " ".join(self.allowed)))
        return [found] + list(argv[1:])
