#!/usr/bin/env python3
"""A minimal blob server for nydusd's http-proxy backend (python stdlib only).

  range_server.py DIR tcp PORTFILE PREFIX   serve DIR/<name> at PREFIX/<name> on 127.0.0.1
  range_server.py DIR unix SOCKET PREFIX    the same on a unix socket
  range_server.py FILE unix SOCKET /        FILE at every path (upstream's local
                                            http-proxy asks for "/", one blob a socket)

HEAD answers Content-Length; GET honours a single "Range: bytes=a-b" (206). Every
request line is appended to DIR/../<mode>-requests.log so a test can see that the
daemon really read through this server.
"""
import http.server
import os
import re
import socketserver
import sys

BLOBS, MODE, WHERE, PREFIX = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].rstrip("/")
LOG = os.path.join(os.path.dirname(os.path.abspath(BLOBS)), f"{MODE}-requests.log")
SINGLE = os.path.isfile(BLOBS)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _file(self):
        with open(LOG, "a") as f:
            f.write(f"{self.command} {self.path} {self.headers.get('Range', '')}\n")
        if SINGLE:
            return BLOBS
        if not self.path.startswith(PREFIX + "/"):
            return None
        name = self.path[len(PREFIX) + 1:]
        p = os.path.join(BLOBS, name)
        return p if "/" not in name and os.path.isfile(p) else None

    def _missing(self):
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        p = self._file()
        if p is None:
            return self._missing()
        self.send_response(200)
        self.send_header("Content-Length", str(os.path.getsize(p)))
        self.end_headers()

    def do_GET(self):
        p = self._file()
        if p is None:
            return self._missing()
        size = os.path.getsize(p)
        start, end, status = 0, size - 1, 200
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if m:
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
            status = 206
        with open(p, "rb") as f:
            f.seek(start)
            body = f.read(max(0, end - start + 1))
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Tcp(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


class Unix(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


if MODE == "tcp":
    srv = Tcp(("127.0.0.1", 0), Handler)
    with open(WHERE + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(WHERE + ".tmp", WHERE)
else:
    srv = Unix(WHERE, Handler)
srv.serve_forever()
