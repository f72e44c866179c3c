"""One plugin instance per running supervisord, shared by all its HTTP servers.

supervisord calls the rpcinterface factory once per configured HTTP server
(unix and inet: twice) and again after every reload, which also clears all
event subscriptions.  ``plugin_for`` returns the same instance for the same
supervisord, so nothing is subscribed, counted or started twice.  A reload
or restart makes a new instance, which takes over from the state file.
"""
import os
import time

from supervisor import events
from supervisor.states import SupervisorStates

from supervisor_meshx import orphans, tasks
from supervisor_meshx.config import Settings
from supervisor_meshx.consul_agent import ConsulAgent
from supervisor_meshx.faults import MeshxFault
from supervisor_meshx.mainloop import MainLoop
from supervisor_meshx.ports import PortAllocator
from supervisor_meshx.proxy_groups import ProxyGroups
from supervisor_meshx.proxy_process import ProxyProcess
from supervisor_meshx.services import MeshServices
from supervisor_meshx.state_file import VERSION, StateFile
from supervisor_meshx.ttl import TtlKeeper
from supervisor_meshx.upstreams import Upstreams

SAVE_DELAY = 0.25  # seconds over which changes are gathered into one write
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
        self.proxies = ProxyGroups(supervisord, settings, self.log_error, self.changed)
        agent = ConsulAgent(settings.consul_connection())
        self.ttl = TtlKeeper(self.loop, agent, self.proxies.state_name, self._reconcile, self.log_warning)
        ports = PortAllocator(settings.tcp_address, *settings.port_range)
        self.services = MeshServices(self.loop, agent, self.proxies, self.ttl, ports, settings,
                                     self.log_warning, self.changed)
        self.upstreams = Upstreams(self.services, ports, settings)
        self.state = StateFile(settings.state_file or default_state_file(supervisord.options),
                               self.loop, self.log_error)
        self._save_scheduled = False
        self.restored = False
        self._subscribe()

    def log_error(self, message):
        self.supervisord.options.logger.error(message)

    def log_warning(self, message):
        self.supervisord.options.logger.warn(message)

    # -- state -----------------------------------------------------------

    def changed(self):
        """Something worth saving changed; main thread."""
        if not self._save_scheduled and self.restored:
            self._save_scheduled = True
            self.loop.call_later(SAVE_DELAY, self._save)

    def _save(self):
        self._save_scheduled = False
        self.state.save(self._snapshot())

    def _snapshot(self):
        return {"version": VERSION, "proxies": self.proxies.snapshot(), "services": self.services.snapshot()}

    def _restore(self):
        """Steps: stop orphans of a killed supervisord, then own and run everything saved."""
        saved = self.state.load()
        proxies = saved.get("proxies", {})
        recorded = [(p["pid"], p["argv"]) for p in proxies.values()]
        stopped = yield self.loop.submit(orphans.stop_orphans, recorded, self.settings.proxy_stopwaitsecs)
        if stopped:
            self.log_warning("meshx: stopped %d proxies left running by an earlier supervisord: pids %s"
                             % (len(stopped), " ".join(map(str, stopped))))
        for service_id, entry in saved["services"].items():
            self._try("restore service %s" % service_id, self.services.adopt, service_id, entry)
        for service_id, entry in proxies.items():
            self._try("restore proxy %s" % service_id, self.proxies.start, service_id, entry["cmd"],
                      entry["restarts"])
        for service_id, entry in saved["services"].items():
            yield from self._quietly(self.services.reconcile(service_id, count=not entry.get("deregistered")))
            self.services.resume_ttl(service_id, entry)
        self.restored = True  # from now on the state file follows every change
        self.changed()

    def _try(self, what, fn, *args):
        try:
            fn(*args)
        except (MeshxFault, OSError, KeyError, TypeError, ValueError) as exc:
            self.log_error("meshx: cannot %s: %s" % (what, getattr(exc, "text", exc)))

    def _quietly(self, steps):
        try:
            yield from steps
        except MeshxFault as exc:
            self.log_warning("meshx: %s (will retry with the TTL updates)" % exc.text)

    def _reconcile(self, service_id):
        tasks.Task(self.loop, self._quietly(self.services.reconcile(service_id)), self.log_error)

    # -- supervisord's events --------------------------------------------

    def _subscribe(self):
        for event_type, handler in (
            (events.SupervisorRunningEvent, self._on_running),
            (events.SupervisorStoppingEvent, self._on_stopping),
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

    def _on_running(self, _event):
        self.loop.attach()
        tasks.Task(self.loop, self._restore(), self.log_error)

    def _on_stopping(self, _event):
        """Shutdown deregisters (unless configured not to); a reload keeps everything."""
        self.ttl.stop()
        snapshot = self._snapshot()
        if self.supervisord.options.mood == SupervisorStates.SHUTDOWN and self.settings.deregister_on_shutdown:
            for service_id, entry in snapshot["services"].items():
                # the pool's threads are joined at exit, so these finish before supervisord does
                self.loop.submit(self.services.agent.deregister, service_id)
                entry["deregistered"] = True
        if self.restored:
            self.state.save(snapshot)
            self.state.flush()
        if self.supervisord.options.mood == SupervisorStates.RESTARTING:
            # the reload closes descriptors 5 and up under any socket still open
            self.services.close_listeners()
            self.services.agent.close()
        self.loop.detach()

    def _on_process_state(self, event):
        if not isinstance(event.process, ProxyProcess):
            return
        # Wake the loop now (a call may wait for this state; a crashed proxy
        # restarts on the next iteration) and when a delayed restart is due,
        # instead of up to a second later.  Consul hears of the change at once.
        self.loop.wake()
        self.ttl.send_soon(event.process.config.service_id)
        self.changed()
        due = event.process.config.record.restart_due - time.time()
        if due > 0:
            self.loop.call_later(due, self.loop.wake)


def default_state_file(options):
    """Beside supervisord's pid file, which is unique to each supervisord."""
    return os.path.splitext(os.path.abspath(options.pidfile))[0] + ".meshx.json"
