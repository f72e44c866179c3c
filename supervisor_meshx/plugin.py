"""One plugin instance per running supervisord, shared by all its HTTP servers.

supervisord calls the rpcinterface factory once per configured HTTP server
(unix and inet: twice) and again after every reload, which also clears all
event subscriptions.  ``plugin_for`` returns the same instance for the same
supervisord, so nothing is subscribed, counted or started twice.  A reload
or restart makes a new instance, which takes over from the state file.
"""
import ipaddress
import os
import time
from concurrent.futures import Future

from supervisor import events
from supervisor.states import ProcessStates, SupervisorStates

from supervisor_meshx import ownership, registration, tasks
from supervisor_meshx.config import ConfigError, Settings
from supervisor_meshx.consul_agent import ConsulAgent
from supervisor_meshx.desired_state import ServiceRecord
from supervisor_meshx.faults import MeshxFault
from supervisor_meshx.health import HealthProbes
from supervisor_meshx.mainloop import MainLoop
from supervisor_meshx.metrics import Metrics
from supervisor_meshx.names import checked_service_id, shown
from supervisor_meshx.ports import PortAllocator, Ports
from supervisor_meshx.proxy_groups import ProxyGroups
from supervisor_meshx.proxy_process import ProxyProcess
from supervisor_meshx.reconciler import Reconciler
from supervisor_meshx.restart_policy import RestartRecord
from supervisor_meshx.services import MeshServices
from supervisor_meshx.state_file import VERSION, StateFile, check_path
from supervisor_meshx.tasks import Wait
from supervisor_meshx.ttl import TtlKeeper
from supervisor_meshx.upstreams import Upstreams

SAVE_DELAY = 0.25  # seconds over which changes of proxies' states are gathered into one write
SPAWN_REPORT_DELAY = 0.05  # seconds from a proxy's fork to its STARTING's TTL update
RESTORE_TIMEOUT = 120.0  # seconds a call waits for the state of an earlier run to be restored
LEAVE_BATCH = 50  # services per pipelined exchange with the agent at shutdown; batches go out side by side
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
        state_path = settings.state_file or default_state_file(supervisord.options)
        try:
            check_path(state_path)
        except ValueError as exc:
            raise ConfigError(str(exc))
        self.instance = ownership.instance_id(settings.node_name, state_path)
        self.loop = MainLoop(self.log_error)
        self.metrics = Metrics(self._fleet)
        connection = settings.consul_connection()
        self.proxies = ProxyGroups(supervisord, settings, connection.proxy_environment(), self.instance,
                                   self.log_error, self.changed)
        agent = ConsulAgent(connection, settings.consul_timeout, self._log_from_any_thread, self.metrics.agent_call)
        self.health = HealthProbes(self.loop, settings.proxy_health_interval, settings.proxy_health_failures,
                                   self._health_targets, lambda service_id: self.ttl.send_soon(service_id),
                                   self.proxies.restart_unhealthy, self.metrics.health_failures.inc)
        self.ttl = TtlKeeper(self.loop, agent, self.proxies.state_name, self._on_check_missing, self.log_warning,
                             self.health.problem, self._count_ttl_updates)
        ports = Ports(PortAllocator(settings.tcp_address, *settings.port_range),
                      PortAllocator(_any_address(settings.tcp_address), *settings.sidecar_port_range),
                      PortAllocator(_any_address(settings.tcp_address), *settings.admin_port_range))
        self.state = StateFile(state_path, self.loop, self._snapshot, self.log_error)
        self.reconciler = Reconciler(self.loop, agent, self.proxies, self.ttl, ports,
                                     ownership.marker(settings.node_name, self.instance),
                                     self.save, self.changed, self.log_warning, self.metrics.repairs.inc)
        self.services = MeshServices(self.loop, self.reconciler, self.proxies, self.ttl, ports, settings,
                                     self.wait_restored, self.save, self.log_warning)
        self.services.health_problem = self.health.problem
        self.upstreams = Upstreams(self.services, self.reconciler, ports.endpoint, settings)
        self._ports = ports
        self._save_scheduled = False
        self._stopped = False
        self.restored = False
        self._subscribe()

    def log_error(self, message):
        self.supervisord.options.logger.error(message)

    def log_warning(self, message):
        self.supervisord.options.logger.warn(message)

    def _log_from_any_thread(self, message):
        self.loop.call_soon(lambda: self.log_warning(message))

    # -- state -----------------------------------------------------------

    def save(self):
        """Write the state soon; a future done once it is on disk."""
        if self.restored:
            return self.state.save()
        done = Future()  # nothing changes before the saved state is restored
        done.set_result(True)
        return done

    def changed(self):
        """Counts and proxies' states changed (restart counts, pids): save within SAVE_DELAY."""
        if not self._save_scheduled and self.restored:
            self._save_scheduled = True
            self.loop.call_later(SAVE_DELAY, self._save_changes)

    def _save_changes(self):
        self._save_scheduled = False
        self.save()

    def _snapshot(self):
        return {"version": VERSION, "proxies": self.proxies.snapshot(), "services": self.services.snapshot()}

    def wait_restored(self):
        """Steps: wait until the state of an earlier run is restored."""
        if not self.restored:
            if not (yield Wait(lambda: self.restored, timeout=RESTORE_TIMEOUT)):
                raise MeshxFault("FAILED", "supervisor-meshx is still restoring its state; try again")

    def _restore(self):
        """Steps: stop orphans of an earlier supervisord, then own and converge everything saved."""
        records, proxies = self._read(self.state.load())
        recorded = [(entry["pid"], entry["start_time"]) for entry in proxies.values()]
        orphans = yield self.loop.submit(ownership.find_orphans, self.instance, recorded)
        if orphans:
            stopped = yield self.loop.submit(ownership.stop_orphans, orphans, self.settings.proxy_stopwaitsecs)
            self.log_warning("meshx: stopped %d proxies left running by an earlier supervisord: pids %s"
                             % (len(stopped), " ".join(map(str, sorted(stopped)))))
        for service_id, record in records.items():
            if self._adopt(record):
                self.reconciler.saved_history[service_id] = proxies.get(service_id)
        for service_id, entry in proxies.items():
            if service_id not in records:
                self._try("restore proxy %s" % service_id, self.proxies.start, service_id, entry["cmd"], entry)
        self.restored = True  # from now on the state file follows every change
        for service_id in list(self.reconciler.records):
            self.reconciler.reconcile(service_id)
        self._periodic_soon(0)
        self.health.start()
        self.save()

    def _read(self, saved):
        """The saved services and proxies of the right shape; every other entry is logged and skipped."""
        proxies, records = {}, {}
        for service_id, entry in self._section(saved, "proxies").items():
            try:
                proxies[service_id] = _saved_proxy(service_id, entry)
            except (ValueError, TypeError, MeshxFault) as exc:
                self._skipped("proxies", service_id, exc)
        for service_id, entry in self._section(saved, "services").items():
            try:
                record = ServiceRecord.from_json(service_id, entry, proxies.get(service_id, {}).get("cmd", ()))
                if record.cmd:
                    self.proxies.check(service_id, record.cmd)  # proxy_executables may have changed
                records[service_id] = record
            except (ValueError, TypeError, MeshxFault) as exc:
                self._skipped("services", service_id, exc)
        return records, proxies

    def _section(self, saved, name):
        section = saved.get(name, {})
        if not isinstance(section, dict):
            self.log_error("meshx: state file %s: section %s is not a struct; skipped" % (self.state.path, name))
            return {}
        return section

    def _skipped(self, section, key, exc):
        self.log_error("meshx: state file %s: entry %s.%s skipped: %s"
                       % (self.state.path, section, shown(key), getattr(exc, "text", exc)))

    def _adopt(self, record):
        """Hold the ports of a saved service and make it desired; False if they clash."""
        held = []
        for allocator, port in self._ports.held_by(record):
            if not allocator.hold(port):
                for allocator_held, port_held in held:
                    allocator_held.release(port_held)
                self._skipped("services", record.service_id, ValueError("port %d is held twice" % port))
                return False
            held.append((allocator, port))
        self.reconciler.records[record.service_id] = record
        return True

    def _try(self, what, fn, *args):
        try:
            fn(*args)
        except (MeshxFault, OSError, KeyError, TypeError, ValueError) as exc:
            self.log_error("meshx: cannot %s: %s" % (what, getattr(exc, "text", exc)))

    def _periodic_soon(self, delay):
        self.loop.call_later(delay, lambda: self._stopped or tasks.Task(self.loop, self._periodic(), self.log_error))

    def _periodic(self):
        try:
            yield from self.reconciler.periodic_pass()
        except MeshxFault:
            pass  # the agent is unreachable: TTL updates report that; the next pass tries again
        finally:
            if not self._stopped:
                self._periodic_soon(self.settings.reconcile_interval)

    def _health_targets(self):
        """(service_id, kind, address, port) of every RUNNING proxy of a mesh service."""
        targets = []
        for service_id, record in self.reconciler.records.items():
            if not (record.present and record.cmd) or self.proxies.state_name(service_id) != "RUNNING":
                continue
            if record.health == "envoy":
                port = record.admin_port
            else:
                port = record.sidecar_port or registration.sidecar_port(record.registration)
            if port:
                targets.append((service_id, record.health, self.settings.tcp_address, port))
        return targets

    def _fleet(self):
        """What the metrics show of the fleet now; main thread."""
        proxies, restarts = {}, {}
        for service_id in self.proxies.ids():
            state = self.proxies.state_name(service_id)
            proxies[state] = proxies.get(state, 0) + 1
            for cause, count in self.proxies.info(service_id)["restarts_by_cause"].items():
                restarts[cause] = restarts.get(cause, 0) + count
        records = [r for r in self.reconciler.records.values() if r.present]
        return len(records), proxies, restarts, sum(r.reregistrations for r in records)

    def _count_ttl_updates(self, sent, failed):
        self.metrics.ttl_updates.labels("sent").inc(sent)
        self.metrics.ttl_updates.labels("failed").inc(failed)

    def _on_check_missing(self, service_id):
        self.reconciler.reconcile(service_id, register=True)

    # -- supervisord's events --------------------------------------------

    def _subscribe(self):
        for event_type, handler in (
            (events.SupervisorRunningEvent, self._on_running),
            (events.SupervisorStoppingEvent, self._on_stopping),
            (events.ProcessStateEvent, self._on_process_state),
            (events.ProcessGroupRemovedEvent, self._on_group_removed),
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
        self._stopped = True
        self.ttl.stop()
        self.health.stop()
        self.reconciler.stop()
        if self.supervisord.options.mood == SupervisorStates.SHUTDOWN and self.settings.deregister_on_shutdown:
            service_ids = self.services.ids()
            drain = self.settings.stop_drain_seconds
            if drain:
                self.proxies.hold_stops(service_ids, time.time() + drain)
            # the pool's threads are joined at exit, so this finishes before supervisord does
            leaving = [(sid, self.reconciler.records[sid].token_file) for sid in service_ids]
            for first in range(0, len(leaving), LEAVE_BATCH):
                self.loop.submit(_drain_and_deregister, self.reconciler.agent,
                                 leaving[first:first + LEAVE_BATCH], drain)
            for service_id in service_ids:
                self.reconciler.records[service_id].deregistered = True
        if self.restored:
            self.state.flush()
        if self.supervisord.options.mood == SupervisorStates.RESTARTING:
            # the reload closes descriptors 5 and up under any socket still open
            self.services.close_listeners()
            self.reconciler.agent.close()
        self.loop.detach()

    def _on_process_state(self, event):
        if not isinstance(event.process, ProxyProcess) or self._stopped:
            return
        # Recheck now (a call may wait for this state), waking the loop unless the change
        # came from a call run in a wake (a crashed proxy restarts on the next iteration),
        # and wake it when a delayed restart is due, instead of up to a second later.
        # Consul hears of the change at once, but of a crash restarted at once only from
        # its STARTING, and of a STARTING only a moment after the fork: the report's worker
        # doesn't compete with the restart and the calls right after it for the interpreter
        # (the check is critical either way).
        self.loop.recheck()
        service_id = event.process.config.service_id
        if event.process.get_state() == ProcessStates.STARTING:
            self.loop.call_later(SPAWN_REPORT_DELAY, lambda: self.ttl.send_soon(service_id))
        elif not event.process.restarting_now():
            self.ttl.send_soon(service_id)
        self.changed()
        due = event.process.config.record.restart_due - time.time()
        if due > 0:
            self.loop.call_later(due, self.loop.wake)


    def _on_group_removed(self, event):
        """``supervisorctl remove`` of a proxy group: a mesh service gets it back."""
        service_id = self.proxies.group_removed(event.group)
        if service_id is not None and not self._stopped:
            self.log_warning("meshx: proxy group %s was removed; the reconciler adds it again if its "
                             "service is started (meshx stop removes a service)" % event.group)
            self.reconciler.reconcile(service_id)


def default_state_file(options):
    """Beside supervisord's pid file, which is unique to each supervisord."""
    return os.path.splitext(os.path.abspath(options.pidfile))[0] + ".meshx.json"


def _drain_and_deregister(agent, services, drain):
    """At shutdown: ``(service_id, token_file)``s in maintenance at once, one drain for all, then
    deregistered (supervisord stops their proxies when the drain is over, see ProxyGroups.hold_stops)."""
    if drain:
        agent.leave(services, "supervisord shutting down: draining for %g s" % drain)
        time.sleep(drain)
    agent.leave(services)


def _any_address(address):
    """Where a sidecar listens is up to its proxy: probe its ports on every address."""
    return "::" if ipaddress.ip_address(address).version == 6 else "0.0.0.0"


def _saved_proxy(service_id, entry):
    checked_service_id(service_id)
    if not isinstance(entry, dict):
        raise ValueError("not a struct")
    cmd = entry.get("cmd")
    if not (isinstance(cmd, list) and all(isinstance(a, str) for a in cmd)):
        raise ValueError("bad cmd")
    numbers = {key: entry.get(key, 0) for key in ("restarts", "pid", "last_exit_at", "last_running_at")}
    numbers["start_time"] = entry.get("start_time")
    by_cause = entry.get("restarts_by_cause", {"crash": numbers["restarts"]})
    if not isinstance(by_cause, dict) or set(by_cause) - set(RestartRecord.CAUSES):
        raise ValueError("bad restarts_by_cause")
    for key, value in list(numbers.items()) + list(by_cause.items()):
        if value is None and key == "start_time":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("bad %s" % key)
    last_exit = entry.get("last_exit", "")
    if not isinstance(last_exit, str) or len(last_exit) > 200:
        raise ValueError("bad last_exit")
    return dict(numbers, cmd=cmd, restarts_by_cause=by_cause, last_exit=last_exit)


