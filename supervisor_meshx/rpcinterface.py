"""The ``meshx`` XML-RPC namespace.

Enable it in supervisord.conf::

    [rpcinterface:meshx]
    supervisor.rpcinterface_factory = supervisor_meshx.rpcinterface:make_meshx_rpcinterface
"""
import os
import sys

from supervisor.states import SupervisorStates

from supervisor_meshx import API_VERSION, supervisor_fixes, tasks
from supervisor_meshx.config import ConfigError
from supervisor_meshx.faults import MeshxFault
from supervisor_meshx.names import checked_service_id
from supervisor_meshx.plugin import plugin_for
from supervisor_meshx.wire import to_xmlrpc


class MeshxNamespaceRPCInterface:
    def __init__(self, plugin):
        self._plugin = plugin

    def _ready(self):
        if self._plugin.supervisord.options.mood < SupervisorStates.RUNNING:
            raise MeshxFault("SHUTDOWN_STATE", "supervisord is shutting down")
        return self._plugin

    def _now(self, fn, *args):
        """Answer at once, or as soon as the state of an earlier run is restored."""
        if not self._plugin.restored:
            return self._steps(self._after_restore, fn, *args)
        return to_xmlrpc(tasks.call(lambda: fn(*args), self._plugin.log_error))

    def _after_restore(self, fn, *args):
        yield from self._plugin.wait_restored()
        return fn(*args)

    def _steps(self, steps, *args):
        plugin = self._plugin
        return tasks.call(lambda: tasks.run(plugin.loop, steps(*args), plugin.log_error, to_xmlrpc),
                          plugin.log_error)

    def getAPIVersion(self):
        """Return the version of the meshx RPC API.

        @return string version  the API version
        """
        return API_VERSION

    def startProxy(self, service_id, cmd):
        """Add a process group for the sidecar proxy of a service and start it.

        The group, and its one process, are named ``meshx-<service_id>``.
        The program (cmd[0]) must be one of the config key ``proxy_executables``.

        A mesh service's proxy is started by meshx.start; its id is refused here
        (INVALID_STATE).

        @param string service_id  the service the proxy serves
        @param array cmd          the proxy command, an argv list of strings
        @return boolean result    true if started, false (nothing started) for an empty cmd
        """
        return self._steps(self._ready().services.start_proxy, service_id, cmd)

    def stopProxy(self, service_id):
        """Stop the proxy of a service (stop signal, then kill after the stop
        timeout) and remove its process group.  A mesh service's proxy stops
        with its service (meshx.stop); its id is refused here (INVALID_STATE).

        @param string service_id  the service the proxy serves
        @return boolean result    always true
        """
        return self._steps(self._ready().services.stop_proxy, service_id)

    def restart(self, service_id):
        """Stop and start the proxy of a service again; reset its restart count to 0.

        @param string service_id  the service the proxy serves
        @return boolean result    always true
        """
        return self._steps(self._ready().services.restart_proxy, service_id)

    def info(self, service_id):
        """Describe the proxy of a service.

        ``restarts`` counts the restarts supervisord made on its own after the
        proxy died or failed to start, ``restarts_by_cause`` splits them
        (``crash``: exited or killed; ``health``: failed probes);
        ``last_exit`` is how the proxy last ended (``exit status 1``,
        ``terminated by SIGKILL``) and ``last_exit_at``/``last_running_at``
        when (seconds since the epoch, 0: never); ``state`` is supervisord's
        state name, ``pid`` 0 when not running, ``spawnerr`` supervisord's
        last spawn error, ``group`` the supervisord group;
        ``reregistrations`` counts the times the Consul agent had lost the
        service and the plugin registered it again; ``sidecar_port`` and
        ``admin_port`` are the ports the plugin chose for the sidecar (0: none).

        @param string service_id  the service the proxy serves
        @return struct info       {service_id, group, cmd, restarts, restarts_by_cause, last_exit, last_exit_at,
                                  last_running_at, max_restarts, state, pid, spawnerr, reregistrations,
                                  sidecar_port, admin_port}
        """
        plugin = self._ready()

        def describe():
            info = plugin.proxies.info(service_id)
            record = plugin.services.records.get(service_id)
            info["reregistrations"] = record.reregistrations if record else 0
            info["sidecar_port"] = record.sidecar_port if record else 0
            info["admin_port"] = record.admin_port if record else 0
            return info
        return self._now(describe)


    def start(self, service, template=None, force=False, timeout=5000):
        """Start a mesh service: register it and its Connect sidecar in the local
        Consul agent, allocate its endpoint, keep its TTL check alive, run its proxy.

        ``service`` is a name (the id becomes ``<name>-<node_name>``) or a struct
        of Mustache variables with ``name``, optional ``id``, and ``address`` plus
        ``port`` to use a given endpoint.  ``template`` may hold ``registration``,
        ``ttl`` and ``proxy``; missing keys come from ``service_template`` and
        then the built-in defaults.  A failure leaves nothing behind.

        @param struct service   a name (string) or a struct of template variables
        @param struct template  {registration, ttl, proxy}, each optional
        @param boolean force    take over a service registered in Consul by someone else
        @param int timeout      milliseconds to wait for passing health; 0 does not wait
        @return struct result   {service_id, address, port, already_started}
        """
        plugin = self._ready()
        return self._steps(plugin.services.start, service, template, force, timeout)

    def startMany(self, services, template=None, force=False, timeout=5000):
        """Start several mesh services at once, as meshx.start would each.

        @param array services   names or structs, as for meshx.start (at most 1000)
        @param struct template  {registration, ttl, proxy}, for every service
        @param boolean force    take over services registered by someone else
        @param int timeout      milliseconds each may take to pass; 0 does not wait
        @return array results   in order: the struct meshx.start returns, or {service, error}
        """
        return self._steps(self._ready().services.start_many, services, template, force, timeout)

    def stop(self, service_id, drain_seconds=-1):
        """Stop a mesh service, in order: put it in maintenance in Consul (so
        that no new connections are routed to it) and wait ``drain_seconds``,
        then stop its TTL updates and its proxy, then deregister it and its
        sidecar and release its ports.

        @param string service_id     an id returned by meshx.start
        @param int drain_seconds     seconds to drain; -1 (default): the config key stop_drain_seconds
        @return boolean result       always true
        """
        drain = None if drain_seconds == -1 else drain_seconds
        return self._steps(self._ready().services.stop, service_id, drain)

    def maintenance(self, service_id, enable, reason=""):
        """Put a mesh service in Consul's maintenance mode, or take it out: while
        on, Consul routes no new connections to it.  Kept across agent restarts.

        @param string service_id  an id returned by meshx.start
        @param boolean enable     true: on, false: off
        @param string reason      shown by Consul (at most 256 characters)
        @return boolean result    always true
        """
        return self._steps(self._ready().services.maintenance, service_id, enable, reason)

    def list(self):
        """List the services started by this supervisord.

        @return array ids  service ids, sorted
        """
        return self._now(self._ready().services.ids)

    def status(self):
        """Describe every service started by this supervisord, from local state only.

        Fields: ``service_id``; ``address`` and ``port``, its endpoint;
        ``sidecar_port`` and ``admin_port``, the ports chosen for its sidecar;
        ``proxy_state`` (supervisord's state name; REMOVED while the
        reconciler has yet to add a removed proxy group again), ``pid``;
        ``restarts``, ``restarts_by_cause``, ``last_exit``, ``last_exit_at``,
        ``last_running_at`` as in meshx.info; ``reregistrations``;
        ``ttl_status``, what Consul is told (critical while the proxy is not
        RUNNING); ``ttl_set``, the status set with setTtlStatus;
        ``ttl_sent``, the status Consul last accepted ("" if none yet, e.g.
        while the agent can't be reached); ``maintenance``, whether the service
        is in Consul's maintenance mode (meshx.maintenance); ``health``, what
        the failing health probe of its proxy found ("" when it passes or
        probes are off).

        @return array rows  structs {service_id, address, port, sidecar_port, admin_port, proxy_state, pid,
                            restarts, restarts_by_cause, last_exit, last_exit_at, last_running_at,
                            reregistrations, ttl_status, ttl_set, ttl_sent, maintenance, health}
        """
        return self._now(self._ready().services.status)

    def serviceConfig(self, service_id):
        """Return the local Consul agent's definition of a service
        (its /v1/agent/service/:id answer).

        @param string service_id  any service id known to the agent
        @return struct config     the agent's answer; null fields are left out
        """
        return self._steps(self._service_config, service_id)

    def _service_config(self, service_id):
        checked_service_id(service_id)
        services = self._plugin.services
        config = yield services.consul(services.agent.service, service_id)
        if config is None:
            raise MeshxFault("BAD_NAME", "the Consul agent has no service %s" % service_id)
        return config

    def getTtlStatus(self, service_id):
        """Return the TTL status set for a service (what Consul gets while its proxy runs).

        @param string service_id  an id returned by meshx.start
        @return string status     passing, warning or critical
        """
        return self._now(lambda: self._ready().services.ttl_check(service_id).status)

    def setTtlStatus(self, service_id, status):
        """Set the TTL status of a service and send it to Consul at once.
        While the proxy is not RUNNING, Consul gets critical regardless.

        @param string service_id  an id returned by meshx.start
        @param string status      passing, warning or critical
        @return boolean result    always true
        """
        return self._now(self._ready().services.set_ttl_status, service_id, status)


    def connect(self, upstreams, template=None, proxy=None):
        """Give this node a local endpoint for each upstream service, carried by
        the sidecar of a proxy service (started with a placeholder listener if
        it isn't running).  An upstream already connected keeps its endpoint.

        @param array upstreams  names, or structs of template variables with a name
        @param struct template  the upstream template (default: upstream_template, then
                                {DestinationName, LocalBindAddress, LocalBindPort})
        @param array proxy      [name, id] of the proxy service (default upstream-<node_name>)
        @return array results   in input order: {name, address, port} or {name, error}
        """
        return self._steps(self._ready().upstreams.connect, upstreams, template, proxy)

    def disconnect(self, upstreams, proxy_service_id="", restart_proxy=False):
        """Remove upstreams from a proxy service and release their endpoints.

        @param array upstreams          names
        @param string proxy_service_id  the proxy service (default upstream-<node_name>)
        @param boolean restart_proxy    restart the proxy so that open connections close
        @return array removed           the names removed
        """
        return self._steps(self._ready().upstreams.disconnect, upstreams, proxy_service_id, restart_proxy)

    def metrics(self):
        """Prometheus metrics of the proxy fleet, in the text exposition format: services owned,
        proxies by state, restarts by cause, health probe failures, re-registrations, reconciler
        repairs, TTL updates sent and failed, agent calls by outcome and their latency.

        @return string text  the exposition text (as for node_exporter's textfile collector)
        """
        return self._now(self._ready().metrics.text)

    def listUpstreams(self, proxy_service_id=""):
        """List the upstreams of a proxy service.

        @param string proxy_service_id  the proxy service (default upstream-<node_name>)
        @return array names             upstream names, in the order connected
        """
        return self._now(self._ready().upstreams.names, proxy_service_id)


def make_meshx_rpcinterface(supervisord, **config):
    """supervisord's ``supervisor.rpcinterface_factory`` for the meshx namespace."""
    supervisor_fixes.install()
    try:
        return MeshxNamespaceRPCInterface(plugin_for(supervisord, config))
    except ConfigError as exc:
        _refuse_to_start(supervisord.options, "meshx: %s" % exc)


def _refuse_to_start(options, reason):
    """Stop supervisord with ``reason`` on stderr and in its log, as its own
    configuration errors do.  Raising would only print "Could not make meshx
    rpc interface" and log a traceback.  Nothing runs yet (or, on a reload,
    any more): supervisord spawns its programs after the rpc interfaces are made."""
    options.logger.critical(reason)
    for handler in getattr(options.logger, "handlers", []):
        try:
            handler.flush()
        except Exception:
            pass
    sys.stderr.write("Error: %s\nFor help, use %s -h\n" % (reason, sys.argv[0]))
    sys.stderr.flush()
    os._exit(2)
