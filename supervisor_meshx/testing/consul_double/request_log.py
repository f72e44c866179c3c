"""The requests a double received, for tests to count and inspect."""

import time


class LoggedRequest:
    def __init__(self, method, path, query, headers, body):
        self.at = time.time()  # when it arrived
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers  # http.client.HTTPMessage: .get() ignores case
        self.body = body

    def __repr__(self):
        return "<LoggedRequest %s %s>" % (self.method, self.path)
