"""The ``meshx`` XML-RPC namespace.

Enable it in supervisord.conf::

    [rpcinterface:meshx]
    supervisor.rpcinterface_factory = supervisor_meshx.rpcinterface:make_meshx_rpcinterface
"""
from supervisor.states import SupervisorStates

from supervisor_meshx import API_VERSION, tasks
from supervisor_meshx.config import ConfigError
from supervisor_meshx.faults import MeshxFault
from supervisor_meshx.plugin import plugin_for


class MeshxNamespaceRPCInterface:
    def __init__(self, plugin):
        self._plugin = plugin

    def _ready(self):
        if self._plugin.supervisord.options.mood < SupervisorStates.RUNNING:
            raise MeshxFault("SHUTDOWN_STATE", "supervisord is shutting down")
        return self._plugin

    def _now(self, fn, *args):
        return tasks.call(lambda: fn(*args), self._plugin.log_error)

    def _steps(self, steps, *args):
        plugin = self._plugin
        return tasks.call(lambda: tasks.run(plugin.loop, steps(*args), plugin.log_error), plugin.log_error)

    def getAPIVersion(self):
        """Return the version of the meshx RPC API.

        @return string version  the API version
        """
        return API_VERSION

    def startProxy(self, service_id, cmd):
        """Add a process group for the sidecar proxy of a service and start it.

        The group, and its one process, are named ``meshx-<service_id>``.
        The program (cmd[0]) must be one of the config key ``proxy_executables``.

        @param string service_id  the service the proxy serves
        @param array cmd          the proxy command, an argv list of strings
        @return boolean result    true if started, false (nothing started) for an empty cmd
        """
        return self._now(self._ready().proxies.start, service_id, cmd)

    def stopProxy(self, service_id):
        """Stop the proxy of a service (stop signal, then kill after the stop
        timeout) and remove its process group.

        @param string service_id  the service the proxy serves
        @return boolean result    always true
        """
        return self._steps(self._ready().proxies.stop, service_id)

    def restart(self, service_id):
        """Stop and start the proxy of a service again; reset its restart count to 0.

        @param string service_id  the service the proxy serves
        @return boolean result    always true
        """
        return self._steps(self._ready().proxies.restart, service_id)

    def info(self, service_id):
        """Describe the proxy of a service.

        ``restarts`` counts the restarts supervisord made on its own after the
        proxy died or failed to start; ``state`` is supervisord's state name,
        ``pid`` 0 when not running, ``group`` the supervisord group.

        @param string service_id  the service the proxy serves
        @return struct info       {service_id, group, cmd, restarts, max_restarts, state, pid, spawnerr}
        """
        return self._now(self._ready().proxies.info, service_id)


def make_meshx_rpcinterface(supervisord, **config):
    """supervisord's ``supervisor.rpcinterface_factory`` for the meshx namespace."""
    try:
        return MeshxNamespaceRPCInterface(plugin_for(supervisord, config))
    except ConfigError as exc:
        # supervisord reports only "Could not make meshx rpc interface"
        supervisord.options.logger.critical("meshx: %s" % exc)
        raise
