"""supervisord's process class for sidecar proxies, with the plugin's restart rule.

A proxy's program config has ``autorestart=false`` and an unreachable
``startretries``, so supervisord itself never restarts it; ``ProxyProcess``
does, in ``transition()`` (called by supervisord's loop on every iteration),
after a failure recorded as the process enters EXITED or BACKOFF.
Starts made anywhere else (``meshx.*`` calls, ``supervisorctl start``) call
``spawn()`` directly and so are never counted as restarts.
"""
import time

from supervisor.options import ProcessConfig
from supervisor.process import Subprocess
from supervisor.states import ProcessStates, SupervisorStates

# Large enough that supervisord's own BACKOFF -> FATAL rule never fires first,
# small enough for XML-RPC's 32-bit ints in getAllConfigInfo.
NEVER = 2 ** 31 - 1


class ProxyProcessConfig(ProcessConfig):
    """A ProcessConfig whose processes are ProxyProcess, tied to a restart record."""

    service_id = None
    policy = None
    record = None
    on_error = None

    def make_process(self, group=None):
        process = ProxyProcess(self)
        process.group = group
        return process


class ProxyProcess(Subprocess):
    def change_state(self, new_state, expected=True):
        if new_state in (ProcessStates.EXITED, ProcessStates.BACKOFF):
            # recorded before the state event goes out, so listeners see the restart time
            record, policy = self.config.record, self.config.policy
            record.failed(policy, time.time(), self.laststop - self.laststart)
            if not policy.allows(record.restarts):
                self.config.options.logger.warn("meshx: %s stays down after %d restarts (max_proxy_restarts)"
                                                % (self.config.name, record.restarts))
        return Subprocess.change_state(self, new_state, expected)

    def transition(self):
        try:
            self._restart_if_due()
        except Exception as exc:  # must never reach supervisord's loop
            self.config.on_error("meshx: restart of %s failed: %r" % (self.config.name, exc))
        Subprocess.transition(self)

    def _restart_if_due(self):
        if self.config.options.mood < SupervisorStates.RUNNING:
            return
        if self.state not in (ProcessStates.EXITED, ProcessStates.BACKOFF):
            return
        record, policy = self.config.record, self.config.policy
        if not policy.allows(record.restarts):
            if self.state == ProcessStates.BACKOFF:
                self.give_up()  # BACKOFF -> FATAL; an EXITED proxy just stays down
            return
        if time.time() < record.restart_due:
            self.delay = record.restart_due  # keeps supervisord's own BACKOFF retry away
            return
        record.restarts += 1
        self.spawn()
