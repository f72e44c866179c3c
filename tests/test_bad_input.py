"""Property-based robustness test of the ``meshx`` XML-RPC namespace.

Random and malformed arguments go to every ``meshx.*`` method of ONE real
supervisord (with the plugin) talking to ONE Consul agent double.  Every answer
must be a documented fault (README's fault table) or a result of the documented
shape, and supervisord must keep RUNNING.  Never acceptable: an HTTP error
(500 / ProtocolError), an answer the client can't parse, UNKNOWN_METHOD for a
real method, or a FAILED fault that is just a Python exception leaking out
("FAILED: TypeError: ...").
"""
import json
import os
import re
import sys
import xmlrpc.client
from xml.parsers.expat import ExpatError

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor_meshx.testing.consul_double import ConsulDouble
from supervisord_harness import Supervisord, wait_for
from supervisord_harness import free_port_range

NODE = "node1"
OWNED_MARKER = "/tmp/owned"  # what the hostile proxy commands try to create

# README, "Faults"
DOCUMENTED_FAULTS = {
    2: "INCORRECT_PARAMETERS", 3: "BAD_ARGUMENTS", 6: "SHUTDOWN_STATE", 10: "BAD_NAME",
    30: "FAILED", 60: "ALREADY_STARTED", 1001: "COMMAND_NOT_ALLOWED", 1002: "SERVICE_NOT_OWNED",
    1003: "INVALID_STATE", 1004: "SERVICE_ALIVE_TIMEOUT", 1005: "BAD_TEMPLATE",
    1006: "CONSUL_UNAVAILABLE", 1007: "CONSUL_ERROR",
}
# "FAILED: TypeError: ...", "FAILED: json.decoder.JSONDecodeError: ..." : a Python exception leaking out
INTERNAL_ERROR = re.compile(r"^FAILED: (?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b")
DNS_SAFE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z")
TTL_STATUSES = ("passing", "warning", "critical")
INT32 = (-2 ** 31, 2 ** 31 - 1)

METHODS = ("getAPIVersion", "startProxy", "stopProxy", "restart", "info", "start", "stop", "list",
           "status", "serviceConfig", "getTtlStatus", "setTtlStatus", "connect", "disconnect",
           "listUpstreams", "startMany")


# ---------------------------------------------------------------------------
# the one supervisord and Consul double of this module


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    marker_before = os.path.lexists(OWNED_MARKER)
    template = tmp_path_factory.mktemp("bad_input") / "service_template.json"
    template.write_text(json.dumps({"proxy": ["sleep", "1000"]}))
    double = ConsulDouble(node_name=NODE).start()
    supervisord = None
    # deeply nested arguments need a deeper stack in the client's marshaller
    recursion_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(recursion_limit, 10000))
    ports = free_port_range(size=100)
    try:
        supervisord = Supervisord(meshx_options={
            "consul_http_addr": double.http_addr, "node_name": NODE,
            "service_template": str(template), "port_range": "%d-%d" % ports,
            "sidecar_port_range": "%d-%d" % free_port_range(size=100, avoid=ports),
            "proxy_startsecs": "0", "proxy_stopwaitsecs": "2",
            # not the harness's "sleep sh python": sh -c / python -c could run anything
            "proxy_executables": "sleep"}).start()
        yield supervisord
    finally:
        sys.setrecursionlimit(recursion_limit)
        if supervisord is not None:
            supervisord.stop()
        double.stop()
    if not marker_before:
        assert not os.path.lexists(OWNED_MARKER), "a hostile proxy command created %s" % OWNED_MARKER


# ---------------------------------------------------------------------------
# strategies


def _xml_char_ok(c):
    """Characters an XML 1.0 document (so an XML-RPC string) can carry."""
    o = ord(c)
    return o in (0x9, 0xA, 0xD) or 0x20 <= o <= 0xD7FF or 0xE000 <= o <= 0xFFFD or o >= 0x10000


xml_chars = st.characters(blacklist_categories=("Cs",)).filter(_xml_char_ok)
any_chars = st.characters(blacklist_categories=("Cs",))  # NUL and control characters too


def weighted(*choices):
    """one_of with weights: weighted((3, a), (1, b)) draws a three times as often as b."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(lambda i: table[i])


GOOD_NAMES = ["web", "db", "a", "x.y", "upstream", "meshx-web", "a.-b", "a" * 200, "a" * 247]
GOOD_IDS = ["web-node1", "db-node1", "a-node1", "x.y-node1", "upstream-node1", "web-node1-sidecar-proxy",
            "web", "a" * 253]
BAD_NAMES = ["a" * 254, "", " ", "-bad", "bad-", "a..b", "a/b", "a b", "web\n", "\u00e9", "a%2Fb", "..",
             "a?b", "a#b", "*", "web-node1 ", "{{id}}"]
names = weighted((6, st.sampled_from(GOOD_NAMES)), (1, st.sampled_from(GOOD_IDS)), (2, st.sampled_from(BAD_NAMES)))
service_ids = weighted((6, st.sampled_from(GOOD_IDS)), (1, st.sampled_from(GOOD_NAMES)),
                       (2, st.sampled_from(BAD_NAMES)))
small_text = st.text(xml_chars, max_size=30)
huge_text = st.builds(lambda c, n: c * n, st.sampled_from(["a", "{", "\u00e9", "-", " ", "{{x}}"]),
                      st.integers(1000, 100_000))
# base64 reaches the plugin as a string that may hold anything, NUL and control characters included
smuggled = st.text(any_chars, max_size=12).map(lambda s: xmlrpc.client.Binary(s.encode()))
MUSTACHE = ["{{#a}}{{/b}}", "{{$x$}}", "{{$port$}}", "{{ $port$ }}", "x{{$port$}}", "{{", "}}", "{{}}",
            "{{>partial}}", "{{=<% %>=}}", "{{= =}}", "{{{name}", "{{{name}}}", "{{name}}", "{{id}}",
            "{{address}}:{{port}}", "{{#name}}{{.}}{{/name}}", "{{a.b.c}}", "{{port.__class__}}",
            "{{#name.upper}}x{{/name.upper}}", "{{! comment }}", "{{^nope}}y{{/nope}}", "{{&name}}",
            "{{#port}}{{#port}}{{#port}}{{/port}}{{/port}}{{/port}}", "{{nope}}", "{{name}}{{"]
mustache = st.sampled_from(MUSTACHE)
ints = st.one_of(st.integers(*INT32), st.sampled_from(
    [0, 1, -1, 80, 65535, 65536, 99, 100, 600000, 600001, 86400001, INT32[0], INT32[1], INT32[1] - 1]))
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.5, -0.0, 1e308])
leaves = st.one_of(ints, st.booleans(), floats, small_text, names, mustache, smuggled,
                   st.builds(xmlrpc.client.DateTime, st.integers(0, 2 ** 31 - 1)))
KEYS = ["name", "id", "address", "port", "registration", "ttl", "proxy", "status", "Name", "ID", "Port",
        "Checks", "CheckID", "TTL", "Connect", "SidecarService", "Proxy", "Upstreams", "DestinationName",
        "LocalBindPort", "LocalBindAddress", "Meta", "Tags", "", "$", "a.b", "\u00e9"]
keys = st.sampled_from(KEYS) | small_text
values = st.recursive(
    leaves | huge_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=16)


def _nested(depth, kind):
    value = "x"
    for _ in range(depth):
        value = {"a": value} if kind == "dict" else [value]
    return value


deep = st.builds(_nested, st.integers(30, 700), st.sampled_from(["dict", "list"]))

HOSTILE_CMDS = [
    ["sh", "-c", "touch %s" % OWNED_MARKER], ["/bin/sh", "-c", "touch %s" % OWNED_MARKER],
    ["sleep", "1000", ";", "touch", OWNED_MARKER], ["sleep", "$(touch %s)" % OWNED_MARKER],
    ["touch", OWNED_MARKER], ["/usr/bin/touch", OWNED_MARKER], ["./sleep", "1"], ["../../bin/sh"],
    ["/bin/../bin/sh", "-c", "touch %s" % OWNED_MARKER], ["env", "touch", OWNED_MARKER],
    [sys.executable, "-c", "open(%r, 'w')" % OWNED_MARKER], [xmlrpc.client.Binary(b"sleep\0"), "1"],
    ["sleep", xmlrpc.client.Binary(b"1\0")], ["sleep", "1000", xmlrpc.client.Binary(b"\x1b[2J\x07")],
    ["sleep", "1000", "caf\u00e9 \U0001f600"], ["", "1"], ["sleep"],
    ["sleep", "x"], ["sleep", "1000"], ["sleep", "%(here)s"], ["sleep", "1000", "a" * 100_000], [],
    ["sleep", 1000], "sleep 1000", ["{{$port$}}"], ["sleep", "{{id}}{{address}}{{port}}"],
]
cmds = weighted((3, st.just(["sleep", "1000"])), (4, st.sampled_from(HOSTILE_CMDS)),
                (1, st.lists(small_text | names, max_size=4)), (1, values))

HOSTILE_TEMPLATES = [
    {}, {"registration": {"Name": "{{#a}}{{/b}}"}}, {"registration": {"Name": "{{$x$}}"}},
    {"registration": {"Name": "{{name}}", "Port": "{{$port$}}"}}, {"registration": {}},
    {"registration": {"Name": "x", "ID": "other"}}, {"registration": {"name": "x", "id": "{{id}}"}},
    {"registration": {"Name": "{{name}}", "Port": "{{$address$}}"}}, {"registration": "x"},
    {"registration": ["x"]}, {"registration": {"Name": "{{name}}", "Checks": "x"}},
    {"registration": {"Name": "{{name}}", "Connect": {"SidecarService": "{{$port$}}"}}},
    {"registration": {"Name": "{{name}}", "Meta": {"k": "{{{{{{{{x"}}},
    {"registration": {"Name": "{{name}}", "Tags": ["{{#port}}{{.}}{{/port}}"] * 20}},
    {"ttl": {}}, {"ttl": []}, {"ttl": ""}, {"ttl": "x"}, {"ttl": {"id": "ttl:{{id}}"}},
    {"ttl": {"id": "ttl:{{id}}", "status": "passing", "ttl": 99}},
    {"ttl": {"id": "ttl:{{id}}", "status": "bogus", "ttl": 5000}},
    {"ttl": {"id": "ttl/{{id}}", "status": "passing", "ttl": 5000}},
    {"ttl": {"id": "nope", "status": "passing", "ttl": 100}},
    {"ttl": {"id": "ttl:{{id}}", "status": "critical", "ttl": 5000}},
    {"ttl": {"id": "ttl:{{id}}", "status": "passing", "ttl": "{{$port$}}"}},
    {"ttl": {"id": "ttl:{{id}}", "status": "passing", "ttl": True}},
    {"proxy": []}, {"proxy": ""}, {"proxy": 0}, {"proxy": "sleep 1000"}, {"proxy": ["sleep"]},
    {"proxy": ["sh", "-c", "touch %s" % OWNED_MARKER]}, {"proxy": ["sleep", "{{$port$}}"]},
    {"proxy": ["sleep", "{{nope}}"]}, {"proxy": [["sleep"]]}, {"proxy": ["{{name}}"]},
    {"registration": {"Name": "{{name}}"}, "ttl": {}, "proxy": []},
    {"extra": "{{nope}}"}, {"registration": _nested(40, "dict")}, {"proxy": "{{$x$}}"},
    {"registration": {"Name": "{{name}}", "Tags": ["caf\u00e9 \U0001f600"]}},
    {"registration": {"Name": "{{name}}", "Meta": {"\u00fcber": "{{nope}}"}}},
]
templates = st.sampled_from(HOSTILE_TEMPLATES) | st.dictionaries(
    st.sampled_from(["registration", "ttl", "proxy"]), values, max_size=3) | values

service_structs = st.fixed_dictionaries({"name": names}, optional={
    "id": service_ids, "address": st.sampled_from(["127.0.0.1", "::1", "", "x", "10.0.0.1"]) | small_text | smuggled,
    "port": ints | small_text, "team": small_text | mustache, "x": values})
services = names | service_structs
ids = weighted((8, service_ids), (1, small_text))
# a short timeout: a valid but unhealthy start must not wait for long
timeouts = st.sampled_from([0, 1, 300, 800, -1, 600001, INT32[0], INT32[1], True, 1.5, "100", ""])
upstream_lists = st.lists(names | st.fixed_dictionaries({"name": names}, optional={"dc": small_text})
                          | values, max_size=4)
UPSTREAM_TEMPLATES = [{}, {"DestinationName": "{{name}}", "LocalBindPort": "{{$port$}}"},
                      {"DestinationName": "{{name}}", "LocalBindPort": "{{port}}"},
                      {"DestinationName": "", "LocalBindPort": "{{$port$}}"},
                      {"DestinationName": "{{name}}", "LocalBindPort": "{{$name$}}"},
                      {"DestinationName": "{{dc}}", "LocalBindAddress": "{{address}}", "LocalBindPort": 1}]
upstream_templates = st.sampled_from(UPSTREAM_TEMPLATES) | values
proxies = st.sampled_from([[], "", ["web", "web-node1"], ["upstream", "upstream-node1"], ["db", "db-node1"],
                           ["x"], ["a", "b", "c"], ["-", "-"], [1, 2]]) | st.lists(names, max_size=3) | values


def _prefix(draw, args, min_size=0):
    return args[:draw(st.integers(min_size, len(args)))]


@st.composite
def plausible_call(draw):
    """A call that is mostly right, so that the deeper code paths run."""
    method = draw(st.sampled_from(METHODS + ("start", "start", "connect", "startProxy")))
    if method in ("getAPIVersion", "list", "status"):
        args = []
    elif method == "startProxy":
        args = [draw(service_ids), draw(cmds)]
    elif method == "setTtlStatus":
        args = [draw(service_ids), draw(st.sampled_from(TTL_STATUSES + ("PASSING", "", "maintenance")) | values)]
    elif method == "start":
        if draw(st.booleans()):
            args = [draw(names | service_structs)]  # the default template: healthy, so no long wait
        else:
            args = [draw(services), draw(templates), draw(st.booleans() | values), draw(timeouts)]
    elif method == "connect":
        args = _prefix(draw, [draw(upstream_lists), draw(upstream_templates), draw(proxies)], 1)
    elif method == "disconnect":
        args = _prefix(draw, [draw(upstream_lists), draw(ids), draw(st.booleans() | values)], 1)
    elif method == "listUpstreams":
        args = _prefix(draw, [draw(ids)])
    else:
        args = [draw(ids)]
    if draw(st.integers(0, 19)) == 0:
        args = args + [draw(values)]  # one argument too many
    return method, args


@st.composite
def random_call(draw):
    method = draw(st.sampled_from(METHODS))
    args = draw(st.lists(values | deep, max_size=5))
    if method == "start" and 2 <= len(args) <= 3:
        # the default timeout is 5 s: keep a random (possibly valid) template from waiting that long
        args = args + [draw(timeouts)]
    return method, args


@st.composite
def any_call(draw):
    return draw(random_call() if draw(st.integers(0, 3)) == 0 else plausible_call())


calls = st.lists(any_call(), min_size=1, max_size=6)


# ---------------------------------------------------------------------------
# what an answer may be


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _struct(value, fields):
    assert isinstance(value, dict), "not a struct: %r" % (value,)
    # extra fields are tolerated (the API may grow); documented ones must all be there
    assert set(fields) <= set(value), "fields %s, documented %s" % (sorted(value), sorted(fields))
    for key, kind in fields.items():
        ok = _is_int(value[key]) if kind is int else isinstance(value[key], kind)
        assert ok, "%s=%r is not %s" % (key, value[key], kind.__name__)


def _strings(value):
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), "not a list of strings"


def check_result(method, args, value):
    """Raise AssertionError unless ``value`` has the shape README documents for ``method``."""
    if method == "getAPIVersion":
        assert isinstance(value, str) and value
    elif method == "startProxy":
        assert isinstance(value, bool)
    elif method in ("stopProxy", "restart", "stop", "setTtlStatus"):
        assert value is True
    elif method == "info":
        _struct(value, {"service_id": str, "group": str, "cmd": list, "restarts": int, "max_restarts": int,
                        "state": str, "pid": int, "spawnerr": str})
        assert value["group"] == "meshx-" + value["service_id"]
    elif method == "start":
        _struct(value, {"service_id": str, "address": str, "port": int, "already_started": bool})
        assert DNS_SAFE.match(value["service_id"])
    elif method == "startMany":
        assert isinstance(value, list) and len(value) == len(args[0])
        for row in value:
            if "error" in row:
                _struct(row, {"service": str, "error": str})
            else:
                check_result("start", args, row)
    elif method == "list":
        _strings(value)
        assert all(DNS_SAFE.match(v) for v in value) and value == sorted(value)
    elif method == "status":
        assert isinstance(value, list)
        for row in value:
            _struct(row, {"service_id": str, "address": str, "port": int, "proxy_state": str, "pid": int,
                          "restarts": int, "ttl_status": str})
    elif method == "serviceConfig":
        assert isinstance(value, dict)
    elif method == "getTtlStatus":
        assert value in TTL_STATUSES
    elif method == "connect":
        assert isinstance(value, list) and len(value) == len(args[0])
        for row in value:
            assert isinstance(row, dict) and isinstance(row.get("name"), str)
            if "error" in row:
                _struct(row, {"name": str, "error": str})
            else:
                _struct(row, {"name": str, "address": str, "port": int})
    elif method in ("disconnect", "listUpstreams"):
        _strings(value)
    else:
        raise AssertionError("no documented result for %s" % method)


def call(rpc, method, args):
    """One call; returns ("ok", value), ("fault", Fault) or ("broken", description)."""
    try:
        return "ok", getattr(rpc.meshx, method)(*args)
    except xmlrpc.client.Fault as fault:
        return "fault", fault
    except xmlrpc.client.ProtocolError as exc:
        return "broken", "HTTP %s %s" % (exc.errcode, exc.errmsg)
    except ExpatError as exc:
        return "broken", "unparseable answer (%s)" % exc
    except (OSError, xmlrpc.client.ResponseError) as exc:
        return "broken", "%s: %s" % (type(exc).__name__, exc)


def check_answer(method, args, outcome):
    kind, value = outcome
    shown = "meshx.%s%s" % (method, _short(args))
    # one assert per kind of bug, so that Hypothesis reports each kind separately
    assert kind != "broken", "%s: no XML-RPC answer: %s" % (shown, value)
    if kind == "fault":
        assert value.faultCode != 1, "%s: UNKNOWN_METHOD for a real method: %s" % (shown, value.faultString)
        assert value.faultCode in DOCUMENTED_FAULTS, "%s: undocumented fault %d %s" % (
            shown, value.faultCode, value.faultString)
        assert value.faultString.split(":")[0] == DOCUMENTED_FAULTS[value.faultCode], \
            "%s: fault string doesn't start with its name: %d %s" % (shown, value.faultCode, value.faultString)
        assert not INTERNAL_ERROR.match(value.faultString) and "Traceback" not in value.faultString, \
            "%s: internal error leaked as a fault: %s" % (shown, value.faultString)
    else:
        try:
            check_result(method, args, value)
        except AssertionError as exc:
            raise AssertionError("%s: undocumented result %s (%s)" % (shown, _short(value), exc)) from None


def _short(value, limit=300):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...(%d chars)" % len(text)


def cleanup(rpc, check=True):
    """Stop what valid calls started, so that ports and ids don't run out; check those answers too."""
    def stop(method, service_id):
        outcome = call(rpc, method, [service_id])
        if check:
            check_answer(method, [service_id], outcome)
        return outcome

    outcome = call(rpc, "list", [])
    if check:
        check_answer("list", [], outcome)
    unstoppable = []
    for service_id in outcome[1] if outcome[0] == "ok" else []:
        kind, value = stop("stop", service_id)
        if kind != "ok":
            unstoppable.append("meshx.stop(%r) -> %s" % (service_id, _short(value)))
        if kind == "fault" and value.faultString.startswith("BAD_NAME: no proxy for"):
            # its proxy was removed by meshx.stopProxy: give it one so that meshx.stop can finish
            call(rpc, "startProxy", [service_id, ["sleep", "1000"]])
            call(rpc, "stop", [service_id])
    for info in rpc.supervisor.getAllProcessInfo():
        if info["group"].startswith("meshx-"):
            stop("stopProxy", info["group"][len("meshx-"):])
    # every service meshx.list() shows must be stoppable with meshx.stop
    assert not (check and unstoppable), "a started service can't be stopped: %s" % "; ".join(unstoppable)


# ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(calls=calls)
def test_every_answer_is_a_documented_fault_or_result(server, calls):
    rpc = server.rpc
    try:
        for method, args in calls:
            check_answer(method, args, call(rpc, method, args))
            assert server.proc.poll() is None, "supervisord exited after meshx.%s%s" % (method, _short(args))
            assert rpc.supervisor.getState()["statename"] == "RUNNING"
    except BaseException:
        if server.proc.poll() is None:
            cleanup(rpc, check=False)
        raise
    cleanup(rpc)
    assert rpc.supervisor.getState()["statename"] == "RUNNING"
    assert not os.path.lexists(OWNED_MARKER), "%s was created" % OWNED_MARKER
    assert_state_file_valid(server)


def assert_state_file_valid(server):
    """The state file parses and matches what the plugin reports (it is written just after a change)."""
    path = os.path.join(server.dir, "supervisord.meshx.json")

    def matches():
        try:
            with open(path) as f:
                state = json.load(f)
        except FileNotFoundError:
            return True  # nothing was ever started
        return state["version"] == 1 and set(state["services"]) == set(server.rpc.meshx.list())
    wait_for(matches, message="a valid state file")
