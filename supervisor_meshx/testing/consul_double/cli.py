"""The command line: python -m supervisor_meshx.testing.consul_double."""

import argparse
import signal
import threading

from .double import ConsulDouble


def main(argv=None):
    parser = argparse.ArgumentParser(description="Serve a Consul agent test double on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--node-name", default="node1")
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args(argv)
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    double = ConsulDouble(port=args.port, node_name=args.node_name)
    double.latency = args.latency
    double.start()
    print("consul double listening on " + double.url, flush=True)
    try:
        while not stopped.wait(0.1):
            pass
    finally:
        double.stop()
    return 0
