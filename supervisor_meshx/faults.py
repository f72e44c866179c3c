"""XML-RPC faults raised by the meshx namespace.

Core supervisord codes keep their numbers; the plugin's own faults get codes
from 1001 up.  Every fault string starts with the fault's name
(``ALREADY_STARTED: web-node1``), including the plugin-defined ones, which
supervisord alone would report as ``UNKNOWN: ...``.
"""
from supervisor.xmlrpc import Faults, RPCError

from supervisor_meshx.wire import NOT_XML

PLUGIN_FAULTS = {
    "COMMAND_NOT_ALLOWED": 1001,
    "SERVICE_NOT_OWNED": 1002,
    "INVALID_STATE": 1003,
    "SERVICE_ALIVE_TIMEOUT": 1004,
    "BAD_TEMPLATE": 1005,
    "CONSUL_UNAVAILABLE": 1006,
    "CONSUL_ERROR": 1007,
}

def fault_code(name):
    if name in PLUGIN_FAULTS:
        return PLUGIN_FAULTS[name]
    return getattr(Faults, name)


class MeshxFault(RPCError):
    """An RPCError whose text is always ``NAME: detail``."""

    def __init__(self, name, detail):
        RPCError.__init__(self, fault_code(name))
        self.name = name
        self.detail = detail
        self.text = NOT_XML.sub("\ufffd", "%s: %s" % (name, detail))
