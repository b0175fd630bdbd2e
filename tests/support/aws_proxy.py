#!/usr/bin/env python3
"""A recording HTTP proxy in front of moto_server, for agent-army's tests.

    python3 aws_proxy.py --port 0 --upstream http://127.0.0.1:MOTO_PORT

Prints `READY <port>` once listening (127.0.0.1 only). Every request is forwarded to the
upstream unchanged and recorded with its EC2 `Action` (query protocol, form-encoded body).

Control endpoints (not forwarded):
  GET  /__proxy/requests   -> JSON list of {"method","path","action","status"}
  POST /__proxy/reset      -> clears the log
  POST /__proxy/kill_after -> body {"action": "RunInstances", "pid": N, "count": 1}: after the
                              upstream answered the Nth such request, SIGKILL process N before
                              the answer is passed back (a crash right after the API call).
"""
import argparse
import http.client
import json
import os
import signal
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
LOG = []
KILL = {}


def action_of(body, query):
    for src in (body, query):
        try:
            params = urllib.parse.parse_qs(src, keep_blank_values=True)
        except Exception:
            continue
        if "Action" in params:
            return params["Action"][0]
    return ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = None

    def log_message(self, *args):
        pass

    def _reply(self, status, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _control(self, body):
        if self.path == "/__proxy/requests":
            with LOCK:
                return self._reply(200, json.dumps(LOG))
        if self.path == "/__proxy/reset":
            with LOCK:
                LOG.clear()
            return self._reply(200, "{}")
        if self.path == "/__proxy/kill_after":
            req = json.loads(body or b"{}")
            with LOCK:
                KILL.clear()
                KILL.update(req)
            return self._reply(200, "{}")
        return self._reply(404, '{"error":"unknown control path"}')

    def _forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/__proxy/"):
            return self._control(body)
        query = urllib.parse.urlsplit(self.path).query
        action = action_of(body.decode("utf-8", "replace"), query)
        up = urllib.parse.urlsplit(self.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        headers["Host"] = f"{up.hostname}:{up.port}"
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        with LOCK:
            LOG.append({"method": self.command, "path": self.path, "action": action, "status": resp.status})
            kill = None
            if KILL and KILL.get("action") == action and resp.status < 300:
                KILL["count"] = KILL.get("count", 1) - 1
                if KILL["count"] <= 0:
                    kill = KILL.get("pid")
                    KILL.clear()
        if kill:
            os.kill(int(kill), signal.SIGKILL)
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() in ("transfer-encoding", "connection", "content-length", "server", "date"):
                continue
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--upstream", required=True)
    args = ap.parse_args()
    Handler.upstream = args.upstream
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    print(f"READY {srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
