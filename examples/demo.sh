#!/usr/bin/env bash
# supervisor-meshx demo: installs the project into .venv, starts a Consul agent
# (a real `consul agent -dev` if consul is on PATH, else the package's Consul
# double) and supervisord with the plugin, then drives it with supervisorctl.
# Exits non-zero if any step fails; leaves no process behind.  MESHX_DEMO_PORT_RANGE and
# MESHX_DEMO_SIDECAR_PORT_RANGE (LOW-HIGH) move its ports, e.g. for two demos side by side.
#
#   examples/demo.sh --two-nodes
#
# runs two nodes instead: node1 on 127.0.0.1 and node2 on 127.0.0.2, each with its own
# supervisord and its own agent of one Consul cluster (the package's double, which
# serves both nodes from one process and shares their catalog), `web` on node1 and
# `api` on node2 with `web` as its upstream.
set -euo pipefail
TWO_NODES=
case "${1:-}" in
    "") ;;
    --two-nodes) TWO_NODES=1 ;;
    *) echo "usage: $0 [--two-nodes]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
ROOT=$PWD

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# echo each command so that it can be pasted into another shell as it is
run() { printf '$'; printf ' %q' "$@"; printf '\n'; "$@"; }

step "Installing into .venv"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e . 2>&1 | grep -v -i warning || true
PY=$ROOT/.venv/bin/python
export PATH=$ROOT/.venv/bin:$PATH

WORK=$(mktemp -d /tmp/meshx-demo.XXXXXX)
PIDS=()
# the directories of the supervisords started (each holds supervisord.conf and .pid)
NODE_DIRS=("$WORK")
[ -n "$TWO_NODES" ] && NODE_DIRS=("$WORK/node1" "$WORK/node2")
cleanup() {
    for dir in "${NODE_DIRS[@]}"; do
        [ -f "$dir/supervisord.pid" ] && supervisorctl -c "$dir/supervisord.conf" shutdown >/dev/null 2>&1 || true
    done
    for dir in "${NODE_DIRS[@]}"; do
        for _ in $(seq 50); do [ -f "$dir/supervisord.pid" ] && kill -0 "$(cat "$dir/supervisord.pid")" 2>/dev/null || break; sleep 0.1; done
    done
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

field() { "$PY" -c 'import json,sys; v=json.load(sys.stdin); print(eval("v" + sys.argv[1]))' "$1"; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { "$PY" - "$1" <<'PYEOF'
import sys, time, urllib.request
deadline = time.time() + 20
while True:
    try:
        urllib.request.urlopen(sys.argv[1], timeout=1).read(); break
    except Exception:
        if time.time() > deadline: sys.exit("timed out waiting for " + sys.argv[1])
        time.sleep(0.1)
PYEOF
}

# wait_get URL TEXT: poll until a GET of URL answers with TEXT in its body
wait_get() { "$PY" - "$1" "$2" <<'PYEOF'
import sys, time, urllib.request
deadline = time.time() + 20
while True:
    try:
        if sys.argv[2] in urllib.request.urlopen(sys.argv[1], timeout=2).read().decode():
            break
    except Exception:
        pass
    if time.time() > deadline: sys.exit("timed out waiting for %s to answer %r" % tuple(sys.argv[1:]))
    time.sleep(0.1)
PYEOF
}
# wait_refused URL: poll until a GET of URL no longer gets an answer
wait_refused() { "$PY" - "$1" <<'PYEOF'
import sys, time, urllib.request
deadline = time.time() + 20
while True:
    try:
        urllib.request.urlopen(sys.argv[1], timeout=2).read()
    except Exception as exc:
        print("no answer (%s)" % exc.__class__.__name__); break
    if time.time() > deadline: sys.exit("%s still answers" % sys.argv[1])
    time.sleep(0.1)
PYEOF
}
# wait_restarted CONF ID OLD_PID: poll until the proxy of ID runs again with another pid, restarts 1
wait_restarted() { "$PY" - "$@" <<'PYEOF'
import json, subprocess, sys, time
deadline = time.time() + 20
while True:
    out = subprocess.run(["supervisorctl", "-c", sys.argv[1], "meshx", "info", sys.argv[2], "--json"],
                         capture_output=True, text=True).stdout
    info = json.loads(out)
    if info["state"] == "RUNNING" and info["pid"] != int(sys.argv[3]) and info["restarts"] == 1:
        break
    if time.time() > deadline:
        sys.exit("the proxy was not restarted: %s" % out)
    time.sleep(0.1)
PYEOF
}

two_nodes() {
    local node addr
    local ports=${MESHX_DEMO_PORT_RANGE:-20000-20999} sidecars=${MESHX_DEMO_SIDECAR_PORT_RANGE:-21000-21999}
    # one port, free on both addresses, for both agents' HTTP APIs
    local consul_port
    consul_port=$("$PY" -c '
import socket
while True:
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0)); port = a.getsockname()[1]
        try:
            b.bind(("127.0.0.2", port))
        except OSError:
            continue
    print(port); break')
    step "Starting a Consul cluster of two agents: node1 on 127.0.0.1:$consul_port, node2 on 127.0.0.2:$consul_port"
    echo "the package's Consul agent double: one process, one catalog, an agent per node"
    "$PY" -m supervisor_meshx.testing.consul_double --nodes node1,node2 --addresses 127.0.0.1,127.0.0.2 \
        --port "$consul_port" >"$WORK/consul.log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$consul_port/v1/agent/self"
    wait_http "http://127.0.0.2:$consul_port/v1/agent/self"
    cat "$WORK/consul.log"

    step "Starting a supervisord with the meshx plugin on each node"
    # The sidecar registers its own Address, the node's (tcp_address): the stand-in
    # proxy listens there and the catalog tells the other nodes so.  Its checks are
    # Consul's defaults (listening, alias of the service), the TCP one every second
    # instead of every ten, so that a sidecar passes soon after it starts.
    cat >"$WORK/template.json" <<JSON
{"registration": {
   "ID": "{{id}}", "Name": "{{name}}",
   "Checks": [{"Name": "TTL check", "CheckID": "ttl:{{id}}", "TTL": "10s"}],
   "Connect": {"SidecarService": {
     "Address": "{{address}}",
     "Checks": [{"Name": "Connect Sidecar Listening", "TCP": "{{address}}:{{sidecar_port}}", "Interval": "1s"},
                {"Name": "Connect Sidecar Aliasing {{id}}", "AliasService": "{{id}}"}],
     "Proxy": {"LocalServiceAddress": "{{address}}", "LocalServicePort": "{{\$port\$}}"}}}},
 "proxy": ["$ROOT/examples/standin_proxy.py", "-sidecar-for", "{{id}}"]}
JSON
    for node in node1 node2; do
        addr=127.0.0.${node#node}
        mkdir -p "$WORK/$node"
        cat >"$WORK/$node/supervisord.conf" <<CONF
[supervisord]
logfile = $WORK/$node/supervisord.log
pidfile = $WORK/$node/supervisord.pid
childlogdir = $WORK/$node

[unix_http_server]
file = $WORK/$node/supervisor.sock

[supervisorctl]
serverurl = unix://$WORK/$node/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[rpcinterface:meshx]
supervisor.rpcinterface_factory = supervisor_meshx.rpcinterface:make_meshx_rpcinterface
consul_http_addr = $addr:$consul_port
node_name = $node
tcp_address = $addr
service_template = $WORK/template.json
proxy_executables = $ROOT/examples/standin_proxy.py
port_range = $ports
sidecar_port_range = $sidecars

[ctlplugin:meshx]
supervisor.ctl_factory = supervisor_meshx.controllerplugin:make_meshx_controllerplugin
CONF
        supervisord -c "$WORK/$node/supervisord.conf"
        echo "$node: supervisord with tcp_address $addr, its agent at $addr:$consul_port"
    done
    node1() { run supervisorctl -c "$WORK/node1/supervisord.conf" "$@"; }
    node2() { run supervisorctl -c "$WORK/node2/supervisord.conf" "$@"; }
    json1() { supervisorctl -c "$WORK/node1/supervisord.conf" "$@" --json; }
    json2() { supervisorctl -c "$WORK/node2/supervisord.conf" "$@" --json; }
    serve_web() {  # a tiny HTTP app on web's endpoint, port $1
        (cd "$WORK" && exec "$PY" -m http.server "$1" --bind 127.0.0.1 >/dev/null 2>&1) &
        WEB_APP=$!
        PIDS+=($WEB_APP)
        wait_http "http://127.0.0.1:$1/hello.txt"
        echo "a tiny HTTP app serves on web's endpoint 127.0.0.1:$1"
    }
    show_instances() {  # what node2's agent says of the sidecars of $1 (default web) on every node, passing only
        "$PY" - "http://127.0.0.2:$consul_port/v1/health/connect/${1:-web}?passing" "${1:-web}" <<'PYEOF'
import json, sys, urllib.request
entries = json.load(urllib.request.urlopen(sys.argv[1], timeout=5))
print("node2's agent, %d passing instance(s) of %s:" % (len(entries), sys.argv[2]))
for e in entries:
    print("  %s  %s  %s:%d" % (e["Node"]["Node"], e["Service"]["ID"], e["Service"]["Address"] or e["Node"]["Address"],
                              e["Service"]["Port"]))
PYEOF
    }

    step "node1: starting service 'web'"
    node1 meshx start web
    local web_port
    web_port=$(json1 meshx start web | field '["port"]')  # already started: the same endpoint
    echo "hello from web on node1" >"$WORK/hello.txt"
    serve_web "$web_port"
    local sidecar
    sidecar=$(json1 meshx config web-node1-sidecar-proxy | field '["Address"] + ":" + str(v["Port"])')
    wait_get "http://$sidecar/hello.txt" "hello from web"
    echo "web's sidecar listens on $sidecar"

    step "node2: starting service 'api' and connecting it to upstream 'web'"
    node2 meshx start api
    node2 meshx connect web --proxy api:api-node2
    local up
    up=$(json2 meshx connect web --proxy api:api-node2 | field '[0]["address"] + ":" + str(v[0]["port"])')
    node2 meshx upstreams api-node2
    wait_get "http://$up/hello.txt" "hello from web"
    show_instances api
    show_instances web

    step "From api's side on node2 ($up) to web on node1"
    run "$PY" -c "import urllib.request; print(urllib.request.urlopen('http://$up/hello.txt').read().decode().strip())"

    step "node1: killing web's proxy: supervisord restarts it and traffic from node2 resumes"
    local pid
    pid=$(json1 meshx info web-node1 | field '["pid"]')
    run kill -9 "$pid"
    wait_restarted "$WORK/node1/supervisord.conf" web-node1 "$pid"
    node1 meshx info web-node1
    wait_get "http://$up/hello.txt" "hello from web"
    run "$PY" -c "import urllib.request; print(urllib.request.urlopen('http://$up/hello.txt').read().decode().strip())"

    step "node1: stopping web: node2's upstream stops answering"
    node1 meshx stop web-node1
    wait_refused "http://$up/hello.txt"
    show_instances

    step "node1: starting web again: node2's upstream answers again"
    node1 meshx start web
    web_port=$(json1 meshx start web | field '["port"]')
    kill "$WEB_APP" 2>/dev/null || true
    serve_web "$web_port"  # a stopped service's endpoint port isn't handed out again at once
    wait_get "http://$up/hello.txt" "hello from web"
    run "$PY" -c "import urllib.request; print(urllib.request.urlopen('http://$up/hello.txt').read().decode().strip())"
    show_instances
    node1 meshx status
    node2 meshx status

    step "Stopping everything"
    node2 meshx disconnect web --proxy api-node2
    node2 meshx stop api-node2
    node1 meshx stop web-node1
    node1 meshx list
    node2 meshx list
    echo
    echo "demo finished: all steps passed"
}

[ -n "$TWO_NODES" ] && { two_nodes; exit 0; }

CONSUL_PORT=$(free_port)
step "Starting a Consul agent on 127.0.0.1:$CONSUL_PORT"
if command -v consul >/dev/null; then
    echo "using the real consul binary: $(command -v consul)"
    consul agent -dev -node demo -bind 127.0.0.1 -client 127.0.0.1 -http-port "$CONSUL_PORT" \
        -dns-port -1 -grpc-port "$(free_port)" -serf-lan-port "$(free_port)" -serf-wan-port "$(free_port)" \
        -server-port "$(free_port)" >"$WORK/consul.log" 2>&1 &
    PIDS+=($!)
    PROXY='["consul", "connect", "proxy", "-log-level", "err", "-sidecar-for", "{{id}}"]'
    EXECUTABLES="consul connect"
else
    echo "no consul binary on PATH: using the package's Consul agent double"
    "$PY" -m supervisor_meshx.testing.consul_double --port "$CONSUL_PORT" --node-name demo >"$WORK/consul.log" 2>&1 &
    PIDS+=($!)
    PROXY="[\"$ROOT/examples/standin_proxy.py\", \"-sidecar-for\", \"{{id}}\"]"
    EXECUTABLES=$ROOT/examples/standin_proxy.py
fi
wait_http "http://127.0.0.1:$CONSUL_PORT/v1/agent/self"

step "Starting supervisord with the meshx plugin"
cat >"$WORK/template.json" <<JSON
{"proxy": $PROXY}
JSON
cat >"$WORK/supervisord.conf" <<CONF
[supervisord]
logfile = $WORK/supervisord.log
pidfile = $WORK/supervisord.pid
childlogdir = $WORK

[unix_http_server]
file = $WORK/supervisor.sock

[supervisorctl]
serverurl = unix://$WORK/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[rpcinterface:meshx]
supervisor.rpcinterface_factory = supervisor_meshx.rpcinterface:make_meshx_rpcinterface
consul_http_addr = 127.0.0.1:$CONSUL_PORT
node_name = demo
service_template = $WORK/template.json
proxy_executables = $EXECUTABLES
proxy_environment = CONSUL_HTTP_ADDR="127.0.0.1:$CONSUL_PORT"
port_range = ${MESHX_DEMO_PORT_RANGE:-20000-20999}
sidecar_port_range = ${MESHX_DEMO_SIDECAR_PORT_RANGE:-21000-21999}

[ctlplugin:meshx]
supervisor.ctl_factory = supervisor_meshx.controllerplugin:make_meshx_controllerplugin
CONF
supervisord -c "$WORK/supervisord.conf"
ctl() { run supervisorctl -c "$WORK/supervisord.conf" "$@"; }
json() { supervisorctl -c "$WORK/supervisord.conf" "$@" --json; }

step "Starting service 'web': registered in Consul, with an endpoint and a sidecar proxy"
ctl meshx start web
WEB_PORT=$(json meshx start web | field '["port"]')  # already started: the same endpoint
echo "hello from web" >"$WORK/hello.txt"
(cd "$WORK" && exec "$PY" -m http.server "$WEB_PORT" --bind 127.0.0.1 >/dev/null 2>&1) &
PIDS+=($!)
wait_http "http://127.0.0.1:$WEB_PORT/hello.txt"
echo "a tiny HTTP app serves on the endpoint 127.0.0.1:$WEB_PORT"

SIDECAR_PORT=$(json meshx config web-demo-sidecar-proxy | field '["Port"]')
step "Asking web through its sidecar's public port $SIDECAR_PORT"
wait_http "http://127.0.0.1:$SIDECAR_PORT/hello.txt"
run "$PY" -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$SIDECAR_PORT/hello.txt').read().decode().strip())"

step "Connecting this node to upstream 'web'"
ctl meshx connect web
UP_PORT=$(json meshx connect web | field '[0]["port"]')  # already connected: the same endpoint
wait_http "http://127.0.0.1:$UP_PORT/hello.txt"
run "$PY" -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$UP_PORT/hello.txt').read().decode().strip())"
ctl meshx upstreams

step "Killing web's proxy: supervisord restarts it and meshx counts it"
PID=$(json meshx info web-demo | field '["pid"]')
run kill -9 "$PID"
"$PY" - "$WORK/supervisord.conf" "$PID" <<'PYEOF'
import json, subprocess, sys, time
deadline = time.time() + 20
while True:
    out = subprocess.run(["supervisorctl", "-c", sys.argv[1], "meshx", "info", "web-demo", "--json"],
                         capture_output=True, text=True).stdout
    info = json.loads(out)
    if info["state"] == "RUNNING" and info["pid"] != int(sys.argv[2]) and info["restarts"] == 1:
        break
    if time.time() > deadline:
        sys.exit("the proxy was not restarted: %s" % out)
    time.sleep(0.1)
PYEOF
ctl meshx info web-demo
ctl meshx status
ctl status

step "Stopping everything"
ctl meshx disconnect web
ctl meshx stop upstream-demo
ctl meshx stop web-demo
ctl meshx list
echo
echo "demo finished: all steps passed"
