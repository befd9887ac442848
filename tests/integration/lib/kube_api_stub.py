#!/usr/bin/env python3
"""A stand-in for a Kubernetes API server's secrets endpoints (no real one is
packaged for Debian 12), speaking what client-go's informers speak:

  GET /api/v1/secrets?fieldSelector=type=<t>[&limit=N][&continue=C]
      -> a SecretList {"kind": "SecretList", "metadata": {"resourceVersion"}, "items": [...]}
  GET /api/v1/secrets?fieldSelector=...&watch=true&resourceVersion=R[&timeoutSeconds=S]
      -> HTTP/1.1 chunked, one JSON event per line: {"type": ADDED|MODIFIED|DELETED, "object": Secret},
         every change after R, then new ones as they happen, until S seconds have passed;
         410 Gone as an ERROR event (a Status) when R is older than the kept history.

Over HTTPS (--cert/--key), bearer-token authenticated (--token; 401 otherwise).
The secrets are the files <namespace>_<name>.json in --secrets-dir, each a
Secret object; the directory is polled, every change gets the next
resourceVersion. Each request is logged to --log as
"<method> <target> auth=<ok|bad>".
"""
import argparse
import json
import os
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ap = argparse.ArgumentParser()
ap.add_argument("--secrets-dir", required=True)
ap.add_argument("--cert", required=True)
ap.add_argument("--key", required=True)
ap.add_argument("--token", required=True)
ap.add_argument("--port-file", required=True)
ap.add_argument("--log", required=True)
args = ap.parse_args()

lock = threading.Condition()
rv = 100
secrets = {}   # "ns/name" -> Secret with metadata.resourceVersion
history = []   # (rv, type, Secret)
mtimes = {}


def load(path):
    with open(path) as f:
        return json.load(f)


def scan():
    global rv
    seen = {}
    for fn in os.listdir(args.secrets_dir):
        if fn.endswith(".json"):
            p = os.path.join(args.secrets_dir, fn)
            try:
                seen[fn] = (os.stat(p).st_mtime_ns, p)
            except FileNotFoundError:
                pass
    with lock:
        changed = False
        for fn, (mt, p) in seen.items():
            if mtimes.get(fn) == mt:
                continue
            try:
                s = load(p)
            except (OSError, ValueError):
                continue
            mtimes[fn] = mt
            rv += 1
            s.setdefault("metadata", {})["resourceVersion"] = str(rv)
            key = s["metadata"]["namespace"] + "/" + s["metadata"]["name"]
            history.append((rv, "MODIFIED" if key in secrets else "ADDED", s))
            secrets[key] = s
            changed = True
        for fn in [f for f in mtimes if f not in seen]:
            del mtimes[fn]
            ns, _, name = fn[:-5].partition("_")
            old = secrets.pop(ns + "/" + name, None)
            if old is not None:
                rv += 1
                old = json.loads(json.dumps(old))
                old["metadata"]["resourceVersion"] = str(rv)
                history.append((rv, "DELETED", old))
                changed = True
        if changed:
            lock.notify_all()


def poll_dir():
    while True:
        time.sleep(0.1)
        scan()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self):
        ok = self.headers.get("Authorization") == "Bearer " + args.token
        with open(args.log, "a") as f:
            f.write("GET %s auth=%s\n" % (self.path, "ok" if ok else "bad"))
        if not ok:
            return self.send_json(401, {"kind": "Status", "code": 401, "reason": "Unauthorized"})
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        if url.path != "/api/v1/secrets":
            return self.send_json(404, {"kind": "Status", "code": 404})
        want_type = q.get("fieldSelector", "").removeprefix("type=")
        match = lambda s: not want_type or s.get("type") == want_type
        if q.get("watch") not in ("true", "1"):
            with lock:
                items = [s for _, s in sorted(secrets.items()) if match(s)]
                return self.send_json(200, {"kind": "SecretList", "apiVersion": "v1",
                                            "metadata": {"resourceVersion": str(rv)}, "items": items})
        since = int(q.get("resourceVersion") or 0)
        deadline = time.monotonic() + int(q.get("timeoutSeconds") or 1800)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with lock:
            if history and since < history[0][0] - 1:
                gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
                self.chunk(json.dumps(gone).encode() + b"\n")
                return self.chunk(b"")
        try:
            while time.monotonic() < deadline:
                with lock:
                    events = [(r, t, s) for r, t, s in history if r > since]
                    if not events:
                        lock.wait(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
                        continue
                for r, t, s in events:
                    if match(s):
                        self.chunk(json.dumps({"type": t, "object": s}).encode() + b"\n")
                    since = r
            self.chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            pass


scan()
threading.Thread(target=poll_dir, daemon=True).start()
srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
srv.daemon_threads = True
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(args.cert, args.key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
with open(args.port_file + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(args.port_file + ".tmp", args.port_file)
srv.serve_forever()
