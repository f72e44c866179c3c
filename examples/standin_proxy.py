#!/usr/bin/env python3
"""A stand-in for `consul connect proxy`, for machines without a consul binary.

    standin_proxy.py -sidecar-for SERVICE_ID [-http-addr 127.0.0.1:8500]

Reads the sidecar registration `<SERVICE_ID>-sidecar-proxy` from the local
Consul agent, forwards its public port to the service's local endpoint, and
for each upstream listens on LocalBindPort and forwards to the upstream's
sidecar registered on the same agent.  Plain TCP, no mTLS: a demo aid only.
It re-reads the registration every second, so upstreams added by
`meshx connect` start working without a restart.
"""
import argparse
import json
import os
import socket
import sys
import threading
import time
import urllib.request


def agent_get(addr, path):
    with urllib.request.urlopen("http://%s%s" % (addr, path), timeout=5) as response:
        return json.load(response)


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
    """Listens on one address and forwards each connection to ``target()``."""

    def __init__(self, address, port, target):
        self.target = target
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
        try:
            upstream = socket.create_connection(self.target(), timeout=5)
        except OSError:
            client.close()
            return
        threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
        pipe(upstream, client)

    def close(self):
        self.listener.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-sidecar-for", dest="service_id", required=True)
    parser.add_argument("-http-addr", default=os.environ.get("CONSUL_HTTP_ADDR", "127.0.0.1:8500"))
    args = parser.parse_args()
    addr = args.http_addr.split("://")[-1]
    sidecar_id = args.service_id + "-sidecar-proxy"

    def sidecar_of(name):
        for service in agent_get(addr, "/v1/agent/services").values():
            if service.get("Kind") == "connect-proxy" and service["Proxy"]["DestinationServiceName"] == name:
                return service["Address"] or "127.0.0.1", service["Port"]
        raise OSError("no sidecar for %s" % name)

    public, upstreams = None, {}
    while True:
        try:
            sidecar = agent_get(addr, "/v1/agent/service/" + sidecar_id)
        except OSError as exc:
            print("waiting for %s: %s" % (sidecar_id, exc), file=sys.stderr, flush=True)
            time.sleep(1)
            continue
        proxy = sidecar["Proxy"]
        if public is None:
            local = (proxy["LocalServiceAddress"], proxy["LocalServicePort"])
            public = Forwarder(sidecar["Address"] or "127.0.0.1", sidecar["Port"], lambda: local)
            print("%s: public port %d -> %s:%d" % (sidecar_id, sidecar["Port"], *local), flush=True)
        wanted = {(u["DestinationName"], u.get("LocalBindAddress") or "127.0.0.1", u["LocalBindPort"])
                  for u in proxy.get("Upstreams", [])}
        for key in set(upstreams) - wanted:
            upstreams.pop(key).close()
        for key in wanted - set(upstreams):
            name, bind, port = key
            upstreams[key] = Forwarder(bind, port, lambda name=name: sidecar_of(name))
            print("%s: upstream %s on %s:%d" % (sidecar_id, name, bind, port), flush=True)
        time.sleep(1)


if __name__ == "__main__":
    main()
