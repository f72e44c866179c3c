"""Values made safe for XML-RPC, which has no null and only 32-bit integers."""

_INT_MAX = 2 ** 31 - 1


def to_xmlrpc(value):
    """Drop None from dicts, turn it into "" in lists, and big integers into strings."""
    if isinstance(value, dict):
        return {str(k): to_xmlrpc(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return ["" if v is None else to_xmlrpc(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT_MAX - 1 <= value <= _INT_MAX:
        return str(value)
    return value
