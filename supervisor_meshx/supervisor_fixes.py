"""A fix for a supervisord bug that the plugin's deferred answers would hit.

supervisord (up to 4.3.0 at least) sets a deferred XML-RPC answer's
Content-Length to its length in characters, not bytes, so any non-ASCII
text in it cuts the answer short and the client fails to parse it
(Supervisor/supervisor#664).  The answer is encoded before its length is taken.
"""
from supervisor.xmlrpc import DeferredXMLRPCResponse


def install():
    getresponse = DeferredXMLRPCResponse.getresponse
    if getattr(getresponse, "meshx_fixed", False):
        return

    def getresponse_in_bytes(self, body):
        if isinstance(body, str):
            body = body.encode("utf-8")
        return getresponse(self, body)

    getresponse_in_bytes.meshx_fixed = True
    DeferredXMLRPCResponse.getresponse = getresponse_in_bytes
