"""``supervisor-meshx``: the ``meshx`` commands where no ctlplugin is loaded.

Reads the server URL, user and password like supervisorctl: from a
supervisord config (``-c``; the usual places when absent) or ``-s/-u/-p``.
"""
import argparse
import sys

from supervisor.options import ClientOptions

from supervisor_meshx import commands


CONNECTION = (("-c", "--configuration", "FILE", "supervisord's configuration file (default: the usual places)"),
              ("-s", "--serverurl", "URL", "supervisord's URL, e.g. unix:///var/run/supervisor.sock"),
              ("-u", "--username", "USER", "user name for supervisord's HTTP server"),
              ("-p", "--password", "PASSWORD", "its password"))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    connection = argparse.ArgumentParser(prog="supervisor-meshx", add_help=False,
                                         usage="supervisor-meshx [-c FILE] [-s URL] [-u USER] [-p PASSWORD] "
                                               "COMMAND ...")
    for flag, long_flag, metavar, help_text in CONNECTION:
        connection.add_argument(flag, long_flag, metavar=metavar, help=help_text)
    known, rest = connection.parse_known_args(argv)
    if not rest or rest[0] in ("-h", "--help"):
        print(connection.format_help().rstrip())
        print(commands.build_parser("supervisor-meshx").format_help().split("\n", 1)[1].rstrip())
        return 0
    client_args = []
    for flag, value in (("-c", known.configuration), ("-s", known.serverurl),
                        ("-u", known.username), ("-p", known.password)):
        if value is not None:
            client_args += [flag, value]
    options = ClientOptions()
    options.realize(client_args, doc=__doc__)
    meshx = options.getServerProxy().meshx
    return commands.run(rest, meshx, print, prog="supervisor-meshx", server_url=options.serverurl)


if __name__ == "__main__":
    sys.exit(main())
