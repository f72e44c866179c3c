"""When supervisord may restart a proxy on its own, and how long it waits.

supervisord alone restarts a process that crashed after RUNNING forever and
without delay, and gives up after ``startretries`` quick failures.  A sidecar
needs one rule for both: at most ``max_restarts`` automatic restarts (None =
unlimited), the first restart after a failure at once, and consecutive
failures delayed ``backoff * 2**(n-2)`` seconds, capped at ``backoff_max``.
A proxy that ran at least ``backoff_max`` seconds before failing starts a new
series of consecutive failures.
"""
from supervisor_meshx.state_file import Versioned


class RestartPolicy:
    def __init__(self, max_restarts=5, backoff=1.0, backoff_max=30.0):
        self.max_restarts = max_restarts
        self.backoff = backoff
        self.backoff_max = backoff_max

    def delay(self, consecutive_failures):
        if consecutive_failures <= 1:
            return 0.0
        return min(self.backoff_max, self.backoff * 2 ** (consecutive_failures - 2))

    def allows(self, restarts):
        return self.max_restarts is None or restarts < self.max_restarts


class RestartRecord(Versioned):
    """Restart accounting and history of one proxy; outlives the supervisord process
    object and is saved with the plugin's state."""

    CAUSES = ("crash", "health")  # crash: the proxy exited or was killed

    def __init__(self, restarts=0, by_cause=None, last_exit="", last_exit_at=0, last_running_at=0):
        self.restarts = restarts
        self.by_cause = {cause: 0 for cause in self.CAUSES}
        self.by_cause.update(by_cause or {"crash": restarts})
        self.last_exit = last_exit  # "exit status 1", "terminated by SIGKILL", ...
        self.last_exit_at = last_exit_at  # seconds since the epoch
        self.last_running_at = last_running_at
        self.consecutive_failures = 0
        self.restart_due = 0.0
        self.pending_cause = None  # "health" while the plugin stops an unhealthy proxy to restart it

    def failed(self, policy, now, ran_for):
        if ran_for >= policy.backoff_max:
            self.consecutive_failures = 0
        self.consecutive_failures += 1
        self.restart_due = now + policy.delay(self.consecutive_failures)

    def restarted(self, cause):
        self.restarts += 1
        self.by_cause = dict(self.by_cause, **{cause: self.by_cause[cause] + 1})

    def reset(self):
        self.restarts = 0
        self.by_cause = {cause: 0 for cause in self.CAUSES}
        self.consecutive_failures = 0
        self.restart_due = 0.0

    def history(self):
        """What info and status show, and what the state file keeps."""
        return {"restarts": self.restarts, "restarts_by_cause": dict(self.by_cause),
                "last_exit": self.last_exit, "last_exit_at": int(self.last_exit_at),
                "last_running_at": int(self.last_running_at)}

    @classmethod
    def from_history(cls, saved):
        return cls(saved.get("restarts", 0), saved.get("restarts_by_cause"), saved.get("last_exit", ""),
                   saved.get("last_exit_at", 0), saved.get("last_running_at", 0))
