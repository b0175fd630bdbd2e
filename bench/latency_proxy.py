#!/usr/bin/env python3
"""A recording latency proxy for bench/fleet: every request waits a fixed time, as over a WAN.

    python3 latency_proxy.py --upstream http://127.0.0.1:PORT [--port 0] [--latency-ms 100]

Prints `READY <port>` once listening (127.0.0.1 only). Each request is delayed by half the
latency before it is forwarded and by the other half before its answer goes back, so one call
costs one round trip of --latency-ms however the client uses its connections. Clients may keep
connections alive and open hundreds at once (one thread per connection, a deep listen queue);
towards the upstream the proxy reuses at most --upstream-connections keep-alive connections
(the emulators answer in milliseconds; a burst of new connections would overflow their small
listen queues, and a dropped SYN costs a one-second retransmit that is not the client's doing).

Every request is recorded:
  {"method", "path" (without the query), "op" (EC2 `Action`, or METHOD + path with numeric ids
   as {id}), "mutating" (bool), "status", "bytes" (of the request body), "start", "end"
   (time.monotonic() seconds, the system-wide clock of the driver too, as seen by
   the proxy: from the request's arrival to the last byte of its answer), "up_start", "up_end"
   (when it was handed to the upstream and its answer was back: the emulator's own time, with
   any wait for a free upstream connection)}

Control endpoints (never forwarded, never delayed):
  GET  /__bench/requests   -> JSON list of the records since the last reset
  POST /__bench/reset      -> clears them
"""
import argparse
import http.client
import json
import queue
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
LOG = []
# EC2 query-protocol actions that only read (everything else changes something).
EC2_READ = re.compile(r"^(Describe|Get|List|Search)")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
              "upgrade", "content-length", "host", "server", "date"}


def ec2_action(body, query):
    for src in (body, query):
        try:
            params = urllib.parse.parse_qs(src, keep_blank_values=True)
        except ValueError:
            continue
        if "Action" in params:
            return params["Action"][0]
    return ""


def classify(method, path, body, query):
    """(op, mutating) of one request."""
    action = ec2_action(body.decode("utf-8", "replace"), query) if method == "POST" else ""
    if action:
        return action, not EC2_READ.match(action)
    return f"{method} {re.sub(r'/[0-9]+(?=/|$)', '/{id}', path)}", method not in ("GET", "HEAD")


class Upstream:
    """A bounded pool of keep-alive connections to one host:port."""

    def __init__(self, url, size):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.prefix = u.path.rstrip("/")
        self.idle = queue.LifoQueue()
        self.slots = threading.BoundedSemaphore(size)

    def request(self, method, path, body, headers):
        self.slots.acquire()
        try:
            for attempt in (1, 2):
                try:
                    conn, reused = self.idle.get_nowait(), True
                except queue.Empty:
                    conn, reused = http.client.HTTPConnection(self.host, self.port, timeout=120), False
                try:
                    conn.request(method, self.prefix + path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                    conn.close()
                    if reused and attempt == 1:  # an idle connection the upstream had closed
                        continue
                    raise
                if resp.will_close:
                    conn.close()
                else:
                    self.idle.put(conn)
                return resp.status, resp.getheaders(), data
        finally:
            self.slots.release()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: Upstream = None
    half = 0.05

    def log_message(self, *args):
        pass

    def _reply(self, status, data, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if status not in (204, 304) and self.command != "HEAD":
            self.wfile.write(data)

    def _control(self):
        ctype = [("Content-Type", "application/json")]
        if self.path == "/__bench/requests" and self.command == "GET":
            with LOCK:
                data = json.dumps(LOG).encode()
            return self._reply(200, data, ctype)
        if self.path == "/__bench/reset" and self.command == "POST":
            with LOCK:
                LOG.clear()
            return self._reply(200, b"{}", ctype)
        return self._reply(404, b'{"error":"unknown control path"}', ctype)

    def _forward(self):
        start = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/__bench/"):
            return self._control()
        u = urllib.parse.urlsplit(self.path)
        op, mutating = classify(self.command, u.path, body, u.query)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = f"{self.upstream.host}:{self.upstream.port}"
        time.sleep(self.half)
        up_start = time.monotonic()
        try:
            status, resp_headers, data = self.upstream.request(self.command, self.path, body, headers)
        except (OSError, http.client.HTTPException) as e:
            status, resp_headers, data = 502, [("Content-Type", "text/plain")], f"proxy: {e!r}".encode()
        up_end = time.monotonic()
        time.sleep(self.half)
        self._reply(status, data, [(k, v) for k, v in resp_headers if k.lower() not in HOP_BY_HOP])
        self.wfile.flush()
        with LOCK:
            LOG.append({"method": self.command, "path": u.path, "op": op, "mutating": mutating,
                        "status": status, "bytes": len(body), "start": start, "end": time.monotonic(),
                        "up_start": up_start, "up_end": up_end})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # hundreds of clients may connect in the same millisecond


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--upstream", required=True, help="base URL; its path is put before each request's")
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--upstream-connections", type=int, default=16)
    args = ap.parse_args()
    Handler.upstream = Upstream(args.upstream, args.upstream_connections)
    Handler.half = args.latency_ms / 2000.0
    srv = Server(("127.0.0.1", args.port), Handler)
    print(f"READY {srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
