#!/usr/bin/env python3
"""A stand-in for `consul connect proxy`, for machines without a consul binary.

    standin_proxy.py -sidecar-for SERVICE_ID [-http-addr 127.0.0.1:8500]
                     [-token TOKEN] [-token-file FILE]

Reads the sidecar registration `<SERVICE_ID>-sidecar-proxy` from the local
Consul agent and forwards its public port (on the sidecar's Address, else the
node's address) to the service's local endpoint.  For each upstream it listens
on LocalBindAddress:LocalBindPort and forwards every connection to one of the
destination's passing sidecars, on any node of the cluster, taking them in
turn (round robin).  Those come from the agent's health endpoint,
`GET /v1/health/connect/<name>?passing`, watched with blocking queries
(`index`/`wait`, `X-Consul-Index`) as Consul's own clients do, so an instance
that goes critical gets no new connections.  Plain TCP, no mTLS: a demo aid
only.  It re-reads its registration every second, so upstreams added by
`meshx connect` start working without a restart.

Like the consul CLI it reads CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN and
CONSUL_HTTP_TOKEN_FILE (the file wins, and is read at every request, so a
rotated token needs no restart); the flags override them.
"""
import argparse
import json
import os
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request

WAIT_SECONDS = 5  # a blocking query's wait: short, so a removed upstream's watcher ends soon
RETRY_SECONDS = 1  # after an error, or an agent that does not block: poll this often
CONNECT_TIMEOUT = 5


def log(*args):
    print(*args, flush=True)


class Agent:
    """The local agent's HTTP API, with the ACL token if one is configured."""

    def __init__(self, addr, token="", token_file=""):
        self.addr = addr.split("://")[-1].rstrip("/")
        self.token, self.token_file = token, token_file
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no HTTP proxy

    def _token(self):
        if self.token_file:
            try:
                with open(self.token_file) as f:
                    token = f.read().strip()
                if token:
                    return token
            except OSError as exc:
                print("cannot read token file %s: %s" % (self.token_file, exc), file=sys.stderr, flush=True)
        return self.token

    def get(self, path, timeout=5):
        """(decoded JSON body, response headers)."""
        request = urllib.request.Request("http://%s%s" % (self.addr, path))
        token = self._token()
        if token:
            request.add_header("X-Consul-Token", token)
        with self.opener.open(request, timeout=timeout) as response:
            return json.load(response), response.headers

    def node_address(self):
        """The address the catalog gives this node (what other nodes dial when a service has none)."""
        try:
            me, _ = self.get("/v1/agent/self")
            return (me.get("Member") or {}).get("Addr") or "127.0.0.1"
        except (OSError, ValueError):
            return "127.0.0.1"


def target_of(entry):
    """A CheckServiceNode's (address, port): Service.Address, else Node.Address."""
    service = entry.get("Service") or {}
    address = service.get("Address") or (entry.get("Node") or {}).get("Address")
    port = service.get("Port")
    if not address or not isinstance(port, int) or port <= 0:
        return None
    return address, port


class Instances:
    """The passing sidecars of one destination service, across the cluster, kept
    current by a blocking query on /v1/health/connect/<name>?passing."""

    def __init__(self, agent, name, label):
        self.agent, self.name, self.label = agent, name, label
        self._targets = []
        self._next = 0
        self._lock = threading.Lock()
        self.resolved = threading.Event()  # set once the first answer is in
        self._stopped = threading.Event()
        threading.Thread(target=self._watch, daemon=True, name="watch-" + name).start()

    def in_turn(self):
        """Every passing target, starting with the next one in round robin order."""
        self.resolved.wait(CONNECT_TIMEOUT)
        with self._lock:
            if not self._targets:
                return []
            start = self._next % len(self._targets)
            self._next += 1
            return self._targets[start:] + self._targets[:start]

    def stop(self):
        self._stopped.set()

    def _watch(self):
        index, failing = 0, None
        path = "/v1/health/connect/%s?passing" % urllib.parse.quote(self.name, safe="")
        while not self._stopped.is_set():
            began = time.monotonic()
            try:
                entries, headers = self.agent.get("%s&index=%d&wait=%ds" % (path, index, WAIT_SECONDS),
                                                  timeout=WAIT_SECONDS + 5)
                if not isinstance(entries, list):
                    raise ValueError("not a list: %.100r" % (entries,))
            except (OSError, ValueError) as exc:
                # keep sending where we did: the agent may be restarting; a real
                # proxy keeps its last configuration too
                if failing != str(exc):
                    failing = str(exc)
                    print("%s: resolving %s: %s" % (self.label, self.name, exc), file=sys.stderr, flush=True)
                self._stopped.wait(RETRY_SECONDS)
                continue
            failing = None
            if self._stopped.is_set():
                return
            self._update(sorted({t for t in map(target_of, entries) if t}))
            try:
                new = int(headers.get("X-Consul-Index") or 0)
            except ValueError:
                new = 0
            quick = time.monotonic() - began < 0.05
            if new <= 0 or (new == index and quick):
                # an agent that does not block (or did not block this time): poll
                self._stopped.wait(RETRY_SECONDS)
            # Consul's rules: reset an index that went backwards, never wait on one below 1
            index = 0 if new < index else max(new, 1)

    def _update(self, targets):
        with self._lock:
            changed = targets != self._targets
            self._targets = targets
        self.resolved.set()
        if changed:
            log("%s: upstream %s -> %s" % (self.label, self.name,
                                           ", ".join("%s:%d" % t for t in targets) or "no passing instance"))


def pipe(source, sink):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Forwarder:
    """Listens on one address and forwards each connection to the first of ``targets()`` that answers."""

    def __init__(self, address, port, targets, on_close=None):
        self.targets = targets
        self.on_close = on_close
        self.listener = socket.create_server((address, port), reuse_port=False)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        for target in self.targets():
            try:
                upstream = socket.create_connection(target, timeout=CONNECT_TIMEOUT)
            except OSError:
                continue
            upstream.settimeout(None)
            break
        else:
            client.close()
            return
        threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
        pipe(upstream, client)

    def close(self):
        self.listener.close()
        if self.on_close:
            self.on_close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-sidecar-for", dest="service_id", required=True)
    parser.add_argument("-http-addr", default=os.environ.get("CONSUL_HTTP_ADDR", "127.0.0.1:8500"))
    parser.add_argument("-token", default=os.environ.get("CONSUL_HTTP_TOKEN", ""))
    parser.add_argument("-token-file", default=os.environ.get("CONSUL_HTTP_TOKEN_FILE", ""))
    args = parser.parse_args()
    agent = Agent(args.http_addr, args.token, args.token_file)
    sidecar_id = args.service_id + "-sidecar-proxy"

    public, upstreams = None, {}
    while True:
        try:
            sidecar, _ = agent.get("/v1/agent/service/" + urllib.parse.quote(sidecar_id, safe=""))
        except (OSError, ValueError) as exc:
            print("waiting for %s: %s" % (sidecar_id, exc), file=sys.stderr, flush=True)
            time.sleep(1)
            continue
        proxy = sidecar["Proxy"]
        if public is None:
            local = (proxy["LocalServiceAddress"], proxy["LocalServicePort"])
            address = sidecar["Address"] or agent.node_address()
            public = Forwarder(address, sidecar["Port"], lambda: [local])
            log("%s: public %s:%d -> %s:%d" % (sidecar_id, address, sidecar["Port"], *local))
        wanted = {(u["DestinationName"], u.get("LocalBindAddress") or "127.0.0.1", u["LocalBindPort"])
                  for u in proxy.get("Upstreams", [])}
        for key in set(upstreams) - wanted:
            upstreams.pop(key).close()
        for key in wanted - set(upstreams):
            name, bind, port = key
            instances = Instances(agent, name, sidecar_id)
            upstreams[key] = Forwarder(bind, port, instances.in_turn, on_close=instances.stop)
            log("%s: upstream %s on %s:%d" % (sidecar_id, name, bind, port))
        time.sleep(1)


if __name__ == "__main__":
    main()
