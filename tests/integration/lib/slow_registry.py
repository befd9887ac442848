#!/usr/bin/env python3
"""A minimal OCI distribution blob server that answers slowly.

    slow_registry.py BLOB_DIR PORT_FILE [DELAY_MS [GATE_FILE]]

Serves GET/HEAD /v2/ and /v2/<repo>/blobs/sha256:<hex> (the file BLOB_DIR/<hex>,
with Range support) on 127.0.0.1, waiting DELAY_MS (default 30) before each
blob answer, so a daemon always has requests in flight (what a kill -9 must
not lose). Writes the port it listens on to PORT_FILE. While GATE_FILE exists,
blob answers wait for it to go: a test holds a request in flight as long as it
needs, with no timing guess.
"""

import os
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BLOBS, PORT_FILE = sys.argv[1], sys.argv[2]
DELAY = (int(sys.argv[3]) if len(sys.argv) > 3 else 30) / 1000
GATE = sys.argv[4] if len(sys.argv) > 4 else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        if self.path.rstrip("/") == "/v2":
            return self.reply(200, b"{}", [("Content-Type", "application/json")])
        m = re.fullmatch(r"/v2/.+/blobs/sha256:([0-9a-f]{64})", self.path)
        path = m and os.path.join(BLOBS, m.group(1))
        if not path or not os.path.isfile(path):
            return self.reply(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
        time.sleep(DELAY)
        while GATE and os.path.exists(GATE):
            time.sleep(0.01)
        size = os.path.getsize(path)
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        with open(path, "rb") as f:
            if not rng:
                return self.reply(200, f.read())
            start = int(rng.group(1))
            end = min(int(rng.group(2)) if rng.group(2) else size - 1, size - 1)
            if start > end:
                return self.reply(416, headers=[("Content-Range", f"bytes */{size}")])
            f.seek(start)
            self.reply(206, f.read(end - start + 1), [("Content-Range", f"bytes {start}-{end}/{size}")])

    do_HEAD = do_GET


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
