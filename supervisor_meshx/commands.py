"""The ``meshx`` command line, shared by ``supervisorctl meshx ...`` and ``supervisor-meshx``.

``run(argv, meshx, output)`` parses one command, calls the ``meshx`` XML-RPC
namespace and prints human-readable lines, or JSON with ``--json``.  It
returns supervisorctl's exit status: 0, 1 for a fault (``ERROR: <fault>``),
2 for bad arguments (usage is printed), 7 when supervisord can't be reached.
"""
import argparse
import json
import os
import socket
import tempfile
import xmlrpc.client

from supervisor.supervisorctl import DEAD_PROGRAM_FAULTS, LSBInitExitStatuses


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that reports instead of exiting (supervisorctl is a shell)."""

    def error(self, message):
        raise UsageError("%s%s: error: %s" % (self.format_usage(), self.prog, message))

    def exit(self, status=0, message=None):
        raise UsageError(message or "")


def _add(subparsers, name, help_text, *arguments):
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    for args, kwargs in arguments:
        parser.add_argument(*args, **kwargs)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def build_parser(prog="meshx"):
    parser = _Parser(prog=prog, description="Consul service-mesh services and their sidecar proxies.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add(sub, "start", "Register a service in Consul, give it an endpoint and run its sidecar proxy.",
         (["name"], {"help": "service name"}),
         (["--id"], {"help": "service id (default NAME-<node_name>)"}),
         (["--template"], {"metavar": "FILE.json", "help": "template with registration, ttl and/or proxy"}),
         (["--force"], {"action": "store_true", "help": "take over a service registered by someone else"}),
         (["--timeout"], {"type": int, "default": 5000, "metavar": "MS",
                          "help": "wait at most MS ms for passing health; 0 does not wait (default 5000)"}))
    _add(sub, "stop", "Stop a service: drain, stop its proxy, deregister it.", (["id"], {"help": "service id"}),
         (["--drain"], {"type": float, "metavar": "SECONDS",
                        "help": "keep the proxy up this long in maintenance first (default: stop_drain_seconds)"}))
    _add(sub, "maintenance", "Put a service in Consul's maintenance mode (no new connections) or take it out.",
         (["id"], {"help": "service id"}), (["state"], {"choices": ["on", "off"]}),
         (["--reason"], {"default": "", "help": "shown by Consul"}))
    _add(sub, "info", "Show a service's proxy: command, state, pid, restarts.", (["id"], {"help": "service id"}))
    _add(sub, "restart", "Restart a service's proxy and reset its restart count.", (["id"], {"help": "service id"}))
    _add(sub, "list", "List the services started by this supervisord.")
    _add(sub, "config", "Show the Consul agent's definition of a service.", (["id"], {"help": "service id"}))
    _add(sub, "ttl", "Show a service's TTL status, or set it.",
         (["id"], {"help": "service id"}),
         (["status"], {"nargs": "?", "choices": ["passing", "warning", "critical"], "help": "status to set"}))
    _add(sub, "connect", "Give this node a local endpoint for each upstream service.",
         (["names"], {"nargs": "+", "metavar": "NAME", "help": "upstream service names"}),
         (["--proxy"], {"metavar": "NAME[:ID]", "help": "the proxy service (default upstream-<node_name>)"}))
    _add(sub, "disconnect", "Remove upstreams from a proxy service.",
         (["names"], {"nargs": "+", "metavar": "NAME", "help": "upstream service names"}),
         (["--proxy"], {"metavar": "ID", "default": "", "help": "the proxy service id"}),
         (["--restart"], {"action": "store_true", "help": "restart the proxy so open connections close"}))
    _add(sub, "upstreams", "List the upstreams of a proxy service.",
         (["id"], {"nargs": "?", "default": "", "help": "proxy service id (default upstream-<node_name>)"}))
    _add(sub, "status", "One line per service: endpoint, proxy state, restarts, TTL status.")
    _add(sub, "metrics", "Print Prometheus metrics of the proxy fleet, or write them to a file.",
         (["--output"], {"metavar": "FILE", "help": "write atomically to FILE (e.g. for node_exporter's "
                                                    "textfile collector: a .prom file in its directory)"}))
    _add(sub, "help", "Explain a subcommand.", (["topic"], {"nargs": "?", "help": "subcommand"}))
    return parser


def run(argv, meshx, output, prog="meshx", server_url="supervisord"):
    """``server_url``: where ``meshx`` talks to, named when it can't be reached."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
        if args.command == "help":
            return _help(parser, args.topic, output)
        result = COMMANDS[args.command](args, meshx)
    except UsageError as exc:
        output(str(exc).rstrip())
        return LSBInitExitStatuses.INVALID_ARGS
    except xmlrpc.client.Fault as fault:
        # the server's texts name XML-RPC arguments; here they are flags
        output("ERROR: %s" % fault.faultString.replace("force=true", "--force"))
        return LSBInitExitStatuses.NOT_RUNNING if fault.faultCode in DEAD_PROGRAM_FAULTS \
            else LSBInitExitStatuses.GENERIC
    except (OSError, socket.error, xmlrpc.client.ProtocolError) as exc:
        output("ERROR: cannot reach supervisord at %s: %s" % (server_url, exc))
        return LSBInitExitStatuses.NOT_RUNNING
    if args.json:
        output(json.dumps(result, sort_keys=True))
    else:
        for line in HUMAN[args.command](result, args):
            output(line)
    return LSBInitExitStatuses.GENERIC if _has_errors(result) else LSBInitExitStatuses.SUCCESS


def _help(parser, topic, output):
    subparsers = parser._subparsers._group_actions[0].choices
    if topic is None:
        output(parser.format_help().rstrip())
    elif topic in subparsers:
        output(subparsers[topic].format_help().rstrip())
    else:
        output("*** No help on %s" % topic)
        return LSBInitExitStatuses.INVALID_ARGS
    return LSBInitExitStatuses.SUCCESS


def _has_errors(result):
    return isinstance(result, list) and any(isinstance(r, dict) and "error" in r for r in result)


def _template(path):
    if not path:
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise UsageError("cannot read template %s: %s" % (path, exc))


def _start(args, meshx):
    service = {"name": args.name, "id": args.id} if args.id else args.name
    return meshx.start(service, _template(args.template), args.force, args.timeout)


def _ttl(args, meshx):
    if args.status:
        meshx.setTtlStatus(args.id, args.status)
    status = meshx.getTtlStatus(args.id)
    sent = [row["ttl_sent"] for row in meshx.status() if row["service_id"] == args.id]
    return {"service_id": args.id, "status": status, "sent": sent[0] if sent else ""}


def _connect(args, meshx):
    proxy = args.proxy.split(":", 1) if args.proxy else []
    if len(proxy) == 1:
        proxy = proxy * 2
    return meshx.connect(args.names, {}, proxy)


COMMANDS = {
    "start": _start,
    "stop": lambda args, meshx: meshx.stop(args.id, -1 if args.drain is None else args.drain),
    "maintenance": lambda args, meshx: meshx.maintenance(args.id, args.state == "on", args.reason),
    "info": lambda args, meshx: meshx.info(args.id),
    "restart": lambda args, meshx: meshx.restart(args.id),
    "list": lambda args, meshx: meshx.list(),
    "config": lambda args, meshx: meshx.serviceConfig(args.id),
    "ttl": _ttl,
    "connect": _connect,
    "disconnect": lambda args, meshx: meshx.disconnect(args.names, args.proxy, args.restart),
    "upstreams": lambda args, meshx: meshx.listUpstreams(args.id),
    "status": lambda args, meshx: meshx.status(),
    "metrics": lambda args, meshx: _metrics(args, meshx),
}


def _metrics(args, meshx):
    text = meshx.metrics()
    if args.output:
        _write_atomically(args.output, text)
    return text


def _write_atomically(path, text):
    """A reader (node_exporter) sees the old file or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(prefix=".meshx-metrics-", dir=directory)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as exc:
        raise UsageError("cannot write %s: %s" % (path, exc))


def _endpoint(row):
    return "%s:%s" % (row["address"], row["port"])


def _status_lines(rows, _args):
    if not rows:
        return ["no services"]
    width = max(len(r["service_id"]) for r in rows) + 2
    ends = max(len(_endpoint(r)) for r in rows) + 2
    return ["%s%s%s restarts %-3d ttl %s" % (
        r["service_id"].ljust(width), _endpoint(r).ljust(ends), (r["proxy_state"] or "-").ljust(9),
        r["restarts"], r["ttl_status"] or "-") for r in rows]


def _upstream_lines(results, _args):
    width = max([len(r["name"]) for r in results] + [0]) + 2
    return [r["name"].ljust(width) + ("ERROR: %s" % r["error"] if "error" in r else _endpoint(r))
            for r in results]


HUMAN = {
    "start": lambda r, a: ["%s %s at %s" % (r["service_id"], "already started" if r["already_started"]
                                            else "started", _endpoint(r))],
    "stop": lambda r, a: ["%s stopped" % a.id],
    "maintenance": lambda r, a: ["%s maintenance %s" % (a.id, a.state)],
    "info": lambda r, a: ["%s: %s" % (k, " ".join(v) if isinstance(v, list) else v) for k, v in sorted(r.items())],
    "restart": lambda r, a: ["%s restarted" % a.id],
    "list": lambda r, a: list(r) or ["no services"],
    "config": lambda r, a: json.dumps(r, indent=2, sort_keys=True).splitlines(),
    "ttl": lambda r, a: ["%s %s%s" % (r["service_id"], r["status"], "" if r["sent"] == r["status"] else
                                      " (Consul was last told: %s)" % (r["sent"] or "nothing yet"))],
    "connect": _upstream_lines,
    "disconnect": lambda r, a: ["disconnected: %s" % (", ".join(r) or "nothing")],
    "upstreams": lambda r, a: list(r),
    "status": _status_lines,
    "metrics": lambda r, a: [] if a.output else r.rstrip("\n").splitlines(),
}
