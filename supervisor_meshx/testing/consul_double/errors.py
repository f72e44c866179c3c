"""Answers other than success: the status and the Go error string Consul sends as a plain-text body."""


class HTTPError(Exception):
    """An answer other than success: the status, a plain-text body (Go error string) and extra headers."""

    def __init__(self, status, body, headers=None, content_type="text/plain; charset=utf-8"):
        Exception.__init__(self, "%d %s" % (status, body))
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.content_type = content_type


def bad_request(reason):
    return HTTPError(400, reason)
