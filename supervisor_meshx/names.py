"""Service ids and the supervisord names derived from them.

A proxy for service ``web-node1`` runs as the one process of group
``meshx-web-node1``, named like its group, so ``supervisorctl status``, the
log lines and ``supervisorctl tail -f meshx-web-node1`` all use that name.  Ids accept what Consul accepts as DNS-safe
names (letters, digits, ``-`` and ``.``), which also keeps them safe in
shell commands and in supervisord's group names.
"""
import re

from supervisor_meshx.faults import MeshxFault

GROUP_PREFIX = "meshx-"
SIDECAR_SUFFIX = "-sidecar-proxy"  # the id Consul gives a service's sidecar

# 128 at most: supervisord names log files after the group, and file names
# are limited to 255 bytes
_DNS_SAFE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,126}[A-Za-z0-9])?\Z")


def checked_service_id(value, what="service id"):
    if not isinstance(value, str) or not _DNS_SAFE.match(value):
        raise MeshxFault("BAD_NAME", "%s must be 1-128 letters, digits, '-' or '.', "
                         "starting and ending with a letter or digit: %s" % (what, shown(value)))
    return value


def group_name(service_id):
    return GROUP_PREFIX + service_id


def shown(value):
    """A value as it may appear in a message: its repr, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
