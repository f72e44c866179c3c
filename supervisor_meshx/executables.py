"""Which programs a proxy command may start.

supervisord often runs as root, and anyone who can reach its XML-RPC
socket could otherwise make it run any program at all.  ``proxy_executables``
lists the commands a proxy may be, separated by commas: each is a program
(an absolute path, or a name looked up on PATH) optionally followed by the
leading arguments it is pinned to (``consul connect`` allows ``consul
connect proxy ...`` and ``consul connect envoy ...``, not ``consul lock``).
A value without commas is a plain list of programs (``consul envoy``).
A command's program is resolved the same way and compared by real path (so
a symlink and its target are the same program).  The command runs the real
path that was checked, and ``allows`` checks it again at every spawn, so
re-pointing a symlink afterwards changes nothing.
"""
import os
import shutil

DEFAULT_EXECUTABLES = "consul connect, envoy"


class CommandNotAllowed(Exception):
    pass


def parse(text):
    """The entries of a ``proxy_executables`` value: tuples (program, pinned args...).

    Entries are separated by commas (or lines); a value with neither is a plain list of
    programs separated by spaces, as it was before entries could pin arguments."""
    if "," not in text and "\n" not in text.strip():
        return tuple((program,) for program in text.split())
    return tuple(tuple(part.split()) for part in text.replace("\n", ",").split(",") if part.split())


class ExecutablePolicy:
    def __init__(self, entries, search_path=None):
        self.entries = tuple(entries)
        self._search_path = search_path

    def _resolve(self, program):
        if os.path.isabs(program):
            found = program if os.access(program, os.X_OK) and os.path.isfile(program) else None
        elif os.sep in program:
            found = None  # relative paths depend on the working directory: never allowed
        else:
            found = shutil.which(program, path=self._search_path)
        return os.path.realpath(found) if found else None

    def check(self, argv):
        """Return ``argv`` with its program made the real path to run, or raise CommandNotAllowed."""
        program = argv[0]
        found = self._resolve(program)
        if found is None:
            raise CommandNotAllowed("%r is not an executable file (absolute path or name on PATH)" % program)
        checked = [found] + list(argv[1:])
        if not self.allows(checked):
            raise CommandNotAllowed("%r is not allowed by proxy_executables (%s)" % (
                " ".join(argv[:3]) + (" ..." if len(argv) > 3 else ""), self.describe()))
        return checked

    def allows(self, argv):
        """Whether ``argv`` (its program a real path) is allowed now."""
        for program, *pinned in self.entries:
            if self._resolve(program) == argv[0] and list(argv[1:1 + len(pinned)]) == pinned:
                return True
        return False

    def missing(self):
        """The programs of the entries that can't be found."""
        return [program for program, *_pinned in self.entries if self._resolve(program) is None]

    def describe(self):
        return ", ".join(" ".join(entry) for entry in self.entries)
