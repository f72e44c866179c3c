"""Injected error answers (a knob): which requests a rule answers, and how often."""


class ErrorInjection:
    def __init__(self, status, body, count, method, path_prefix):
        self.status, self.body, self.count = status, body, count
        self.method, self.path_prefix = method, path_prefix

    def take(self, method, path):
        """True if this rule answers the request (and uses up one of its count)."""
        if self.count is not None and self.count <= 0:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        if self.count is not None:
            self.count -= 1
        return True
