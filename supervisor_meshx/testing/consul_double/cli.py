"""The command line: python -m supervisor_meshx.testing.consul_double [--nodes node1,node2 ...]."""

import argparse
import signal
import threading

from .cluster import ConsulCluster
from .double import ConsulDouble


def _names(text):
    return [name.strip() for name in text.split(",") if name.strip()]


def cluster_ports(port, addresses):
    """--port for the first node on each address, ephemeral ports for the others (all ephemeral for 0)."""
    taken, ports = set(), []
    for address in addresses:
        ports.append(0 if address in taken else port)
        taken.add(address)
    return ports


def main(argv=None):
    parser = argparse.ArgumentParser(description="Serve a Consul agent test double, or a cluster of them sharing "
                                                 "one catalog (--nodes).")
    parser.add_argument("--port", type=int, default=8500)
    names = parser.add_mutually_exclusive_group()
    names.add_argument("--node-name", default="node1")
    names.add_argument("--nodes", type=_names, help="comma-separated node names: one agent double per node")
    parser.add_argument("--addresses", type=_names,
                        help="comma-separated loopback addresses, one per node (default: 127.0.0.1 for all)")
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args(argv)
    if args.addresses and not args.nodes:
        parser.error("--addresses needs --nodes")
    if args.nodes and args.addresses and len(args.addresses) != len(args.nodes):
        parser.error("--addresses needs one address per node")
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    if args.nodes:
        addresses = args.addresses or ["127.0.0.1"] * len(args.nodes)
        server = ConsulCluster(args.nodes, addresses, ports=cluster_ports(args.port, addresses)).start()
        for double in server.agents:
            double.latency = args.latency
            print("consul double %s listening on %s" % (double.node_name, double.url), flush=True)
    else:
        server = ConsulDouble(port=args.port, node_name=args.node_name)
        server.latency = args.latency
        server.start()
        print("consul double listening on " + server.url, flush=True)
    try:
        while not stopped.wait(0.1):
            pass
    finally:
        server.stop()
    return 0
