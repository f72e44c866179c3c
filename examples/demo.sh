#!/usr/bin/env bash
# supervisor-meshx demo: installs the project into .venv, starts a Consul agent
# (a real `consul agent -dev` if consul is on PATH, else the package's Consul
# double) and supervisord with the plugin, then drives it with supervisorctl.
# Exits non-zero if any step fails; leaves no process behind.  MESHX_DEMO_PORT_RANGE and
# MESHX_DEMO_SIDECAR_PORT_RANGE (LOW-HIGH) move its ports, e.g. for two demos side by side.
set -euo pipefail
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
cleanup() {
    [ -f "$WORK/supervisord.pid" ] && supervisorctl -c "$WORK/supervisord.conf" shutdown >/dev/null 2>&1 || true
    for _ in $(seq 50); do [ -f "$WORK/supervisord.pid" ] && kill -0 "$(cat "$WORK/supervisord.pid")" 2>/dev/null || break; sleep 0.1; done
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

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
field() { "$PY" -c 'import json,sys; v=json.load(sys.stdin); print(eval("v" + sys.argv[1]))' "$1"; }

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
