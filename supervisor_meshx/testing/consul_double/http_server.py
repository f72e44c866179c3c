"""The HTTP server: threads, keep-alive connections, and Go net/http's way of answering."""

import gzip
import os
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote

from .routing import Request


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = socket.SOMAXCONN  # Go listens with the system's somaxconn, not socketserver's 5

    def __init__(self, address, handler, double):
        self.double = double
        self.connections = set()
        self.connections_lock = threading.Lock()
        ThreadingHTTPServer.__init__(self, address, handler)

    def process_request(self, request, client_address):
        if request.family != socket.AF_UNIX:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as Go's net package does
        with self.connections_lock:
            self.connections.add(request)
        ThreadingHTTPServer.process_request(self, request, client_address)

    def shutdown_request(self, request):
        with self.connections_lock:
            self.connections.discard(request)
        ThreadingHTTPServer.shutdown_request(self, request)

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)):
            ThreadingHTTPServer.handle_error(self, request, client_address)

    def drop_connections(self):
        """A stopped agent takes its keep-alive connections down with it."""
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class UnixServer(Server):
    """The same server on a unix socket (Consul's ``addresses { http = "unix://..." }``)."""

    address_family = socket.AF_UNIX

    def server_bind(self):
        if os.path.exists(self.server_address) and not os.path.isfile(self.server_address):
            os.remove(self.server_address)  # a socket left by an earlier run, as Consul removes it
        socketserver.TCPServer.server_bind(self)  # HTTPServer's would look up a host name

    def server_close(self):
        Server.server_close(self)
        try:
            os.remove(self.server_address)
        except OSError:
            pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def send_response(self, code, message=None):
        # like Go's net/http: a Date header, no Server header
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def _handle(self):
        raw_path, _, raw_query = self.path.partition("?")
        path = unquote(raw_path)
        params = parse_qs(raw_query, keep_blank_values=True)
        body = self._read_body()
        request = Request(self.command, path, params, self.headers, body)
        response = self.server.double._answer(request, raw_path, raw_query)
        if response is not None:
            self._send(response)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, response):
        body = response.body
        encoding = self.headers.get("Accept-Encoding") or ""
        gzipped = "gzip" in encoding and len(body) >= 1400
        if gzipped:
            body = gzip.compress(body)
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Vary", "Accept-Encoding")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
