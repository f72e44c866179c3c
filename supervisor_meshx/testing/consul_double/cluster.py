"""ConsulCluster: several agent doubles, each its own node, address and port, sharing one catalog as the
agents of one datacenter share their servers'."""

from .catalog import Catalog
from .double import ConsulDouble


class ConsulCluster:
    """``ConsulCluster(nodes=("node1", "node2")).start()``: one ConsulDouble per node name.

    ``addresses``: one loopback address per node (default 127.0.0.1 for all); ``ports``: one port per node
    (default: ephemeral ones).  Other keyword arguments go to every ConsulDouble."""

    def __init__(self, nodes=("node1", "node2"), addresses=None, datacenter="dc1", ports=None, **double_kwargs):
        nodes = list(nodes)
        addresses = list(addresses) if addresses is not None else ["127.0.0.1"] * len(nodes)
        ports = list(ports) if ports is not None else [0] * len(nodes)
        if len(set(nodes)) != len(nodes):
            raise ValueError("node names must differ: %s" % ", ".join(nodes))
        if not len(nodes) == len(addresses) == len(ports):
            raise ValueError("one address and one port per node")
        self.datacenter = datacenter
        self.catalog = Catalog()
        self.agents = [ConsulDouble(port=port, node_name=node, datacenter=datacenter, address=address,
                                    catalog=self.catalog, **double_kwargs)
                       for node, address, port in zip(nodes, addresses, ports)]

    def agent(self, node_name):
        for double in self.agents:
            if double.node_name == node_name:
                return double
        raise KeyError(node_name)

    def start(self):
        try:
            for double in self.agents:
                double.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        for double in self.agents:
            double.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
