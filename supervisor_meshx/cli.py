"""``supervisor-meshx``: the ``meshx`` commands where no ctlplugin is loaded.

Reads the server URL, user and password like supervisorctl: from a
supervisord config (``-c``; the usual places when absent) or ``-s/-u/-p``.
"""
import argparse
import sys

from supervisor.options import ClientOptions

from supervisor_meshx import commands


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    connection = argparse.ArgumentParser(prog="supervisor-meshx", add_help=False)
    for flag, long_flag in (("-c", "--configuration"), ("-s", "--serverurl"),
                            ("-u", "--username"), ("-p", "--password")):
        connection.add_argument(flag, long_flag)
    known, rest = connection.parse_known_args(argv)
    client_args = []
    for flag, value in (("-c", known.configuration), ("-s", known.serverurl),
                        ("-u", known.username), ("-p", known.password)):
        if value is not None:
            client_args += [flag, value]
    options = ClientOptions()
    options.realize(client_args, doc=__doc__)
    meshx = options.getServerProxy().meshx
    return commands.run(rest, meshx, print, prog="supervisor-meshx")


if __name__ == "__main__":
    sys.exit(main())
