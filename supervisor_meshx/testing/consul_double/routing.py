"""Requests, responses and Go ServeMux routing (exact paths, longest prefix, 405 with Allow, path cleaning)."""

from .errors import HTTPError
from .go_json import go_json


class Request:
    def __init__(self, method, path, params, headers, body):
        self.method = method
        self.path = path
        self.params = params  # every value of every query parameter
        self.query = {key: values[0] for key, values in params.items()}
        self.headers = headers
        self.body = body

    def has(self, name):
        return name in self.params

    @property
    def token(self):
        if self.query.get("token"):
            return self.query["token"]
        if self.headers.get("X-Consul-Token"):
            return self.headers.get("X-Consul-Token")
        words = (self.headers.get("Authorization") or "").split()
        if len(words) >= 2 and words[0].lower() == "bearer":
            return words[1]
        return ""


class Response:
    def __init__(self, status=200, body=b"", content_type=None, headers=None):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = dict(headers or {})


def json_response(request, value, status=200, headers=None):
    return Response(status, go_json(value, pretty=request.has("pretty")), "application/json", headers)


class Router:
    """Go ServeMux semantics: exact paths, longest-prefix subtrees, 405 with Allow, OPTIONS."""

    NOT_FOUND = "Invalid URL path: not a recognized HTTP API endpoint\n"

    def __init__(self, routes):
        self.exact = {path: (method, handler) for path, method, handler in routes if not path.endswith("/")}
        self.prefixes = sorted(((path, method, handler) for path, method, handler in routes if path.endswith("/")),
                               key=lambda route: -len(route[0]))

    def find(self, path):
        if path in self.exact:
            method, handler = self.exact[path]
            return method, lambda request: handler(request)
        for prefix, method, handler in self.prefixes:
            if path.startswith(prefix):
                tail = path[len(prefix):]
                return method, lambda request: handler(request, tail)
        return None, None

    def dispatch(self, request):
        method, handler = self.find(request.path)
        if handler is None:
            if request.path.startswith("/v1/"):
                raise HTTPError(404, self.NOT_FOUND)
            raise HTTPError(404, "404 page not found\n")
        allow = "OPTIONS," + method
        if request.method == "OPTIONS":
            return Response(200, headers={"Allow": allow})
        if request.method != method:
            raise HTTPError(405, "method %s not allowed" % request.method, {"Allow": allow})
        return handler(request)


def clean_path(path):
    """Go's cleanPath: path.Clean, keeping a trailing slash."""
    parts = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    cleaned = "/" + "/".join(parts)
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned
