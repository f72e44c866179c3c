"""One plugin instance per running supervisord, shared by all its HTTP servers.

supervisord calls the rpcinterface factory once per configured HTTP server
(unix and inet: twice) and again after every reload, which also clears all
event subscriptions.  ``plugin_for`` returns the same instance for the same
supervisord, so nothing is subscribed, counted or started twice.
"""
import time

from supervisor import events

from supervisor_meshx.config import Settings
from supervisor_meshx.consul_agent import ConsulAgent
from supervisor_meshx.mainloop import MainLoop
from supervisor_meshx.ports import PortAllocator
from supervisor_meshx.proxy_groups import ProxyGroups
from supervisor_meshx.proxy_process import ProxyProcess
from supervisor_meshx.services import MeshServices
from supervisor_meshx.ttl import TtlKeeper
from supervisor_meshx.upstreams import Upstreams

_current = None


def plugin_for(supervisord, config):
    global _current
    if _current is None or _current.supervisord is not supervisord:
        _current = MeshxPlugin(supervisord, Settings(**config))
    return _current


class MeshxPlugin:
    def __init__(self, supervisord, settings):
        self.supervisord = supervisord
        self.settings = settings
        self.loop = MainLoop(self.log_error)
        self.proxies = ProxyGroups(supervisord, settings, self.log_error)
        agent = ConsulAgent(settings.consul_connection())
        self.ttl = TtlKeeper(self.loop, agent, self.proxies.state_name, self.log_warning)
        ports = PortAllocator(settings.tcp_address, *settings.port_range)
        self.services = MeshServices(self.loop, agent, self.proxies, self.ttl, ports, settings, self.log_warning)
        self.upstreams = Upstreams(self.services, ports, settings)
        self._subscribe()

    def log_error(self, message):
        self.supervisord.options.logger.error(message)

    def log_warning(self, message):
        self.supervisord.options.logger.warn(message)

    def _subscribe(self):
        for event_type, handler in (
            (events.SupervisorRunningEvent, lambda _e: self.loop.attach()),
            (events.SupervisorStoppingEvent, lambda _e: self.loop.detach()),
            (events.ProcessStateEvent, self._on_process_state),
        ):
            events.subscribe(event_type, self._guarded(handler))

    def _guarded(self, handler):
        """An exception in an event callback would stop supervisord's loop."""
        def callback(event):
            try:
                handler(event)
            except Exception as exc:
                self.log_error("meshx: error handling %s: %r" % (type(event).__name__, exc))
        return callback

    def _on_process_state(self, event):
        if not isinstance(event.process, ProxyProcess):
            return
        # Wake the loop now (a call may wait for this state; a crashed proxy
        # restarts on the next iteration) and when a delayed restart is due,
        # instead of up to a second later.  Consul hears of the change at once.
        self.loop.wake()
        self.ttl.send_soon(event.process.config.service_id)
        due = event.process.config.record.restart_due - time.time()
        if due > 0:
            self.loop.call_later(due, self.loop.wake)
