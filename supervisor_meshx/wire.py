"""Values made safe for XML-RPC: no null, 32-bit integers, and only the
characters XML 1.0 can carry."""
import re

_INT_MAX = 2 ** 31 - 1
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def to_xmlrpc(value):
    """Drop None from dicts, turn it into "" in lists, big integers into strings,
    and characters XML can't carry into U+FFFD."""
    if isinstance(value, dict):
        return {to_xmlrpc(str(k)): to_xmlrpc(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return ["" if v is None else to_xmlrpc(v) for v in value]
    if isinstance(value, str):
        return NOT_XML.sub("\ufffd", value)
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT_MAX - 1 <= value <= _INT_MAX:
        return str(value)
    return value
