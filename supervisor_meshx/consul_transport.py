"""python-consul2's HTTP transport, rebuilt on one kept-alive socket per thread.

python-consul2 takes its transport as a ``consul.base.HTTPClient``; its own
(``consul.std``) goes through ``requests``, which costs several times the CPU
per call inside supervisord's process and cannot speak to a unix socket.
This one serves TCP, TLS and ``unix:///path/to/consul.sock`` (Consul's
``addresses { http = "unix://..." }``), writes each request in one send, and
can pipeline a batch of requests (``exchange``): all written at once, the
answers read in order, as HTTP/1.1 allows and Consul's Go server does.

Every call the plugin makes is idempotent (a registration, a deregistration,
a TTL status, a read), so requests that find their kept-alive connection
closed by the agent before any answer are sent again once on a new one.
One instance per thread: a connection is never shared.
"""
import http.client
import json
import socket
import ssl
import time

from consul import base

# What a dead kept-alive connection looks like before any answer has been read.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
MAX_LINE = 65536
MAX_HEADERS = 100
MAX_BODY = 64 * 1024 * 1024  # /v1/agent/services of tens of thousands of services

TransportError = (OSError, http.client.HTTPException)
READ_BUFFER = 16384  # a batch's answers in a few reads
UNIX_BACKLOG_RETRIES = (0.001, 0.005, 0.02, 0.1)  # seconds


class ConsulTransport(base.HTTPClient):
    """``scheme`` is http, https or unix (then ``host`` is the socket's path and ``port`` is unused)."""

    def __init__(self, host, port, scheme, verify=True, cert=None, timeout=None):
        base.HTTPClient.__init__(self, host, port, scheme, verify, cert, timeout)
        self.base_uri = ""  # uri() then gives the request target: path and query
        self._host_header = "localhost" if scheme == "unix" else "%s:%d" % (host, port)
        self._sock = None
        self._reader = None

    # -- python-consul2's interface ---------------------------------------------

    def get(self, callback, path, params=None, headers=None):
        return callback(self.exchange([self.request("GET", path, params, None, headers)])[0])

    def put(self, callback, path, params=None, data="", headers=None):
        return callback(self.exchange([self.request("PUT", path, params, data, headers)])[0])

    def delete(self, callback, path, params=None, data="", headers=None):
        return callback(self.exchange([self.request("DELETE", path, params, data, headers)])[0])

    def post(self, callback, path, params=None, headers=None, data=""):
        return callback(self.exchange([self.request("POST", path, params, data, headers)])[0])

    # -- requests and answers ---------------------------------------------------

    def request(self, method, path, params=None, data=None, headers=None):
        """One request's bytes; ``data``: a str, bytes, or a value sent as JSON."""
        if data is not None and not isinstance(data, (str, bytes)):
            data = json.dumps(data)
        body = data.encode("utf-8") if isinstance(data, str) else (data or b"")
        lines = ["%s %s HTTP/1.1" % (method, self.uri(path, params)), "Host: " + self._host_header]
        if method != "GET" or body:
            lines += ["Content-Type: application/json", "Content-Length: %d" % len(body)]
        for name, value in (headers or {}).items():
            if "\r" in value or "\n" in value:
                raise ValueError("a header value holds a line break")
            lines.append("%s: %s" % (name, value))
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def exchange(self, requests, linger=0.0):
        """Send ``requests`` (bytes, see ``request``) on the kept-alive connection, all at once, and
        return their answers in order (``consul.base.Response``).  ``linger``: seconds to let the
        answers gather before reading them, for answers nobody waits for: read in a few reads
        instead of one wake-up of this thread (and one grab of the interpreter) per answer."""
        if not requests:
            return []
        for attempt in (1, 2):
            reused = self._sock is not None
            if not reused:
                self._connect()
            answers = []
            try:
                self._sock.sendall(b"".join(requests))
                if linger:
                    time.sleep(linger)
                for _ in requests:
                    answer, close = self._read_response()
                    answers.append(answer)
                    if close and len(answers) < len(requests):
                        raise http.client.RemoteDisconnected("the agent closed the connection")
                if close:
                    self.close()
                return answers
            except _STALE:
                self.close()
                if reused and attempt == 1 and not answers:
                    continue
                raise
            except BaseException:
                self.close()
                raise

    def close(self):
        sock, self._sock, self._reader = self._sock, None, None
        if sock is not None:
            sock.close()

    def _connect(self):
        if self.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout)
                for pause in UNIX_BACKLOG_RETRIES:
                    try:
                        sock.connect(self.host)
                        break
                    except BlockingIOError:  # the agent's listen backlog is full: a unix socket says so at once
                        time.sleep(pause)
                else:
                    sock.connect(self.host)
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.create_connection((self.host, self.port), self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == "https":
                try:
                    sock = self._tls_context().wrap_socket(sock, server_hostname=self.host)
                except BaseException:
                    sock.close()
                    raise
        self._sock = sock
        self._reader = sock.makefile("rb", READ_BUFFER)

    def _tls_context(self):
        context = ssl.create_default_context(cafile=self.verify if isinstance(self.verify, str) else None)
        if self.verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if isinstance(self.cert, tuple):
            context.load_cert_chain(*self.cert)
        elif self.cert:
            context.load_cert_chain(self.cert)
        return context

    def _read_response(self):
        """(answer, whether the agent closes the connection after it)."""
        line = self._line()
        if not line:
            raise http.client.RemoteDisconnected("the agent closed the connection")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise http.client.BadStatusLine(line[:80].decode("latin-1"))
        status = int(parts[1])
        headers = {}
        for _ in range(MAX_HEADERS):
            line = self._line()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().title()] = value.strip()
        else:
            raise http.client.HTTPException("too many headers")
        close = parts[0] == b"HTTP/1.0" or headers.get("Connection", "").lower() == "close"
        if headers.get("Transfer-Encoding", "").lower() == "chunked":
            content = self._chunked()
        elif "Content-Length" in headers:
            content = self._exactly(_length(headers["Content-Length"]))
        elif status in (204, 304) or status < 200:
            content = b""
        else:
            content, close = self._reader.read(MAX_BODY), True  # the body ends with the connection
        return base.Response(status, headers, content.decode("utf-8", errors="replace"), content), close

    def _line(self):
        line = self._reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("a line of the agent's answer")
        return line

    def _exactly(self, size):
        content = self._reader.read(size)
        if len(content) < size:
            raise http.client.IncompleteRead(content, size - len(content))
        return content

    def _chunked(self):
        chunks, total = [], 0
        while True:
            size = _length(self._line().split(b";", 1)[0].strip(), base=16)
            if size == 0:
                while self._line() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                raise http.client.HTTPException("the agent's answer is too large")
            chunks.append(self._exactly(size))
            self._line()


def _length(text, base=10):
    try:
        value = int(text, base)
    except ValueError:
        raise http.client.HTTPException("a bad length in the agent's answer")
    if not 0 <= value <= MAX_BODY:
        raise http.client.HTTPException("the agent's answer is too large")
    return value
