"""supervisord's process class for sidecar proxies, with the plugin's restart rule.

A proxy's program config has ``autorestart=false`` and an unreachable
``startretries``, so supervisord itself never restarts it; ``ProxyProcess``
does, in ``transition()`` (called by supervisord's loop on every iteration),
after a failure recorded as the process enters EXITED or BACKOFF.
Starts made anywhere else (``meshx.*`` calls, ``supervisorctl start``) call
``spawn()`` directly and so are never counted as restarts.
"""
import os
import time

from supervisor.options import NotExecutable, ProcessConfig, ProcessGroupConfig, decode_wait_status
from supervisor.process import ProcessGroup, Subprocess
from supervisor.states import ProcessStates, SupervisorStates

from supervisor_meshx import spawn_without_fork

# Large enough that supervisord's own BACKOFF -> FATAL rule never fires first,
# small enough for XML-RPC's 32-bit ints in getAllConfigInfo.
NEVER = 2 ** 31 - 1
REAP_ROUNDS = 100  # of supervisord's reap(), which reaps up to 100 children each
# The states a proxy may be restarted from (STOPPED only for a health restart).
_RESTART_STATES = frozenset((ProcessStates.EXITED, ProcessStates.BACKOFF, ProcessStates.STOPPED))


class ProxyProcessConfig(ProcessConfig):
    """A ProcessConfig whose processes are ProxyProcess, tied to a restart record."""

    service_id = None
    policy = None
    record = None
    executables = None
    on_error = None
    stop_after = 0.0  # supervisord's shutdown waits until then (a drain) before stopping the proxy

    def make_process(self, group=None):
        process = ProxyProcess(self)
        process.group = group
        return process


class ProxyGroupConfig(ProcessGroupConfig):
    supervisord = None

    def make_group(self):
        return ProxyGroup(self)


class ProxyGroup(ProcessGroup):
    """A proxy's process group.

    supervisord stops groups one at a time as it shuts down or reloads (at least one pass of its
    loop each, about 9 s for 1,000 groups).  The first proxy group it asks to stop stops every
    proxy group of its priority at once (their order among one priority is arbitrary anyway), and
    each later pass drops those stopped from supervisord's queue.  supervisord reaps at most 100
    children per pass, and once their pipes are closed nothing wakes its loop for the rest (a
    second per hundred): the exited ones are reaped here.
    """

    def stop_all(self):
        supervisord = self.config.supervisord
        queue = getattr(supervisord, "stop_groups", None)
        if supervisord is None or supervisord.options.mood >= SupervisorStates.RUNNING or \
                not queue or queue[-1] is not self:
            return ProcessGroup.stop_all(self)
        peers = [group for group in queue
                 if isinstance(group, ProxyGroup) and group.config.priority == self.config.priority]
        for group in peers:
            ProcessGroup.stop_all(group)
        _reap_exited(supervisord)
        done = set(id(group) for group in peers if not group.get_unstopped_processes())
        queue[:] = [group for group in queue if id(group) not in done]


def _leads_a_group(pid):
    """Whether a process group of id ``pid`` exists (the process has called setpgrp)."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap_exited(supervisord):
    for _ in range(REAP_ROUNDS):
        try:
            if os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                return  # no child waits to be reaped
        except ChildProcessError:
            return
        supervisord.reap()


class ProxyProcess(Subprocess):
    def finish(self, pid, sts):
        ran = self.state == ProcessStates.RUNNING
        Subprocess.finish(self, pid, sts)
        self.config.record.last_exit = decode_wait_status(sts)[1]
        self.config.record.last_exit_at = time.time()
        if ran:
            self.spawnerr = None  # supervisord's "Bad exit code -1" for a kill: not a spawn error

    def change_state(self, new_state, expected=True):
        if new_state == ProcessStates.RUNNING:
            self.config.record.last_running_at = time.time()
        if new_state in (ProcessStates.EXITED, ProcessStates.BACKOFF) or \
                (new_state == ProcessStates.STOPPED and self.config.record.pending_cause):
            # recorded before the state event goes out, so listeners see the restart time
            record, policy = self.config.record, self.config.policy
            record.failed(policy, time.time(), self.laststop - self.laststart)
            if not policy.allows(record.restarts):
                self.config.options.logger.warn("meshx: %s stays down after %d restarts (max_proxy_restarts)"
                                                % (self.config.name, record.restarts))
        return Subprocess.change_state(self, new_state, expected)

    def stop(self):
        """While a shutdown drains, supervisord asks again on every pass of its loop.
        A stop (by anyone) cancels a pending health restart."""
        if self.config.options.mood < SupervisorStates.RUNNING and time.time() < self.config.stop_after:
            return None
        self.config.record.pending_cause = None
        return Subprocess.stop(self)

    def kill(self, sig):
        """A proxy stopped between its fork and its ``setpgrp`` has no process group yet, and a
        signal to the group finds nobody: supervisord 4.3 drops it (the proxy runs on until the
        stop timeout's SIGKILL), 4.2 marks the proxy UNKNOWN and forgets its pid while it runs.
        Such a proxy is signalled alone: it runs nothing else yet."""
        if not self.pid or _leads_a_group(self.pid):
            return Subprocess.kill(self, sig)
        config = self.config
        as_group = config.stopasgroup, config.killasgroup
        config.stopasgroup = config.killasgroup = False
        try:
            return Subprocess.kill(self, sig)
        finally:
            config.stopasgroup, config.killasgroup = as_group

    def restart_unhealthy(self):
        """Stop the proxy (TERM, KILL after the stop timeout) to be restarted as for a crash,
        counted under cause ``health``."""
        self.config.record.pending_cause = "health"
        return Subprocess.stop(self)

    def get_execv_args(self):
        """What supervisord is about to exec, checked against proxy_executables again
        (its answer may have changed since the command was accepted)."""
        filename, argv = Subprocess.get_execv_args(self)
        if not self.config.executables.allows([filename] + list(argv[1:])):
            raise NotExecutable("%s is not allowed by proxy_executables any more" % filename)
        self._checked = filename, argv
        return filename, argv

    def spawn(self):
        """supervisord's spawn, its fork replaced by ``spawn_without_fork`` (for this call only:
        supervisord's ``options`` are shared), which execs what ``get_execv_args`` checked."""
        options = self.config.options
        if not spawn_without_fork.can_start(self.config) or "fork" in vars(options):
            return Subprocess.spawn(self)
        options.fork = lambda: spawn_without_fork.start_child(self, *self._checked)
        try:
            return Subprocess.spawn(self)
        finally:
            del options.fork

    def transition(self):
        # supervisord calls this for every process on every pass of its loop: a RUNNING proxy
        # must cost no more than one look at its state
        if self.state in _RESTART_STATES:
            try:
                self._restart_if_due()
            except Exception as exc:  # must never reach supervisord's loop
                self.config.on_error("meshx: restart of %s failed: %r" % (self.config.name, exc))
        Subprocess.transition(self)

    def restarting_now(self):
        """Whether the next pass of supervisord's loop restarts this proxy, without a delay."""
        record = self.config.record
        return self._restartable() and self.config.policy.allows(record.restarts) and \
            time.time() >= record.restart_due

    def _restartable(self):
        return self.config.options.mood >= SupervisorStates.RUNNING and (
            self.state in (ProcessStates.EXITED, ProcessStates.BACKOFF) or
            (self.state == ProcessStates.STOPPED and self.config.record.pending_cause))

    def _restart_if_due(self):
        if not self._restartable():
            return
        record, policy = self.config.record, self.config.policy
        if not policy.allows(record.restarts):
            if self.state == ProcessStates.BACKOFF:
                self.give_up()  # BACKOFF -> FATAL; an EXITED proxy just stays down
            return
        if time.time() < record.restart_due:
            self.delay = record.restart_due  # keeps supervisord's own BACKOFF retry away
            return
        record.restarted(record.pending_cause or "crash")
        record.pending_cause = None
        self.spawn()
