"""When supervisord may restart a proxy on its own, and how long it waits.

supervisord alone restarts a process that crashed after RUNNING forever and
without delay, and gives up after ``startretries`` quick failures.  A sidecar
needs one rule for both: at most ``max_restarts`` automatic restarts (None =
unlimited), the first restart after a failure at once, and consecutive
failures delayed ``backoff * 2**(n-2)`` seconds, capped at ``backoff_max``.
A proxy that ran at least ``backoff_max`` seconds before failing starts a new
series of consecutive failures.
"""


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


class RestartRecord:
    """Restart accounting of one proxy; outlives the supervisord process object."""

    def __init__(self, restarts=0):
        self.restarts = restarts
        self.consecutive_failures = 0
        self.restart_due = 0.0

    def failed(self, policy, now, ran_for):
        if ran_for >= policy.backoff_max:
            self.consecutive_failures = 0
        self.consecutive_failures += 1
        self.restart_due = now + policy.delay(self.consecutive_failures)

    def reset(self):
        self.restarts = 0
        self.consecutive_failures = 0
        self.restart_due = 0.0
