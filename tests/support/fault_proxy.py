#!/usr/bin/env python3
"""A fault-injecting HTTP proxy for agent-army's tests (Python 3 standard library only).

    python3 fault_proxy.py --port 0 --upstream http://127.0.0.1:PORT --flavor aws|hetzner

Prints `READY <port>` once listening on 127.0.0.1. Every request is forwarded to the upstream
(moto, or Prism in front of the Hetzner fake, so Hetzner requests are still validated against
the OpenAPI spec) unless a fault is drawn for it. Faults are drawn per request, in arrival
order, from `random.Random(seed)`: with probability `rate` a request gets one of `kinds`:

  500       AWS: 500 with EC2 error XML (InternalError); Hetzner: 500 `server_error`
  503       AWS: 503 with EC2 error XML (Unavailable); Hetzner: 503 `unavailable`
  throttle  AWS: 400 `RequestLimitExceeded` (EC2 error XML);
            Hetzner: 429 `rate_limit_exceeded` with RateLimit-Remaining: 0 and a RateLimit-Reset
            one or two seconds ahead
  timeout   hold the request `hold_seconds` (longer than the client's per-attempt timeout),
            or until the client closes the connection, without an answer, then drop it
  reset     close the socket without answering (RST)

and a phase: `before` (the cloud never sees the request) or `after` (the request is forwarded
and carried out, then its answer is replaced by the fault: a lost answer). Throttling is only
injected `before`: a throttled request is never carried out by either cloud.

Control endpoints (never forwarded, never faulted):
  POST /__faults/config    {"seed": N, "rate": 0.15, "mutating_rate": 0.3 (optional: the rate for
                            calls that change something: EC2 actions but Describe*, Hetzner
                            non-GET), "kinds": [...], "phases": ["before","after"],
                            "hold_seconds": 4, "enabled": true, optional "targets": [only
                            these, e.g. "RunInstances", "POST /servers"], optional "max_faults":
                            N (no more once N were injected since the last reset)}: (re)seeds
                            the generator; keys left out are reset to their defaults
  POST /__faults/disable   no more faults (counters are kept)
  GET  /__faults/stats     {"requests", "forwarded", "inflight", "injected": {"kind:phase": n},
                            "by_target": {"kind:phase TARGET": n}, "kills": n,
                            "timeouts": {"abandoned": n (the client gave up first),
                                         "held_out": n, "abandoned_after_max": seconds}}
  GET  /__faults/requests  [{"method", "path", "target", "status", "fault"}] (status null when
                            no answer was sent)
  POST /__faults/reset     clears counters and the request log (the configuration stays)
  POST /__faults/kill_after {"n": N, "phase": "before"|"after", "pid": optional}: the N-th
                            proxied request from now on SIGKILLs `pid` (before forwarding it, or
                            after the upstream answered and before the answer is passed back).
                            If the pid is not known yet when the N-th request arrives, that
                            request waits (up to 10 s) for POST /__faults/kill_pid {"pid": P}.
                            {} disarms. Answers {"ok": true}.
"""
import argparse
import http.client
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = ["500", "503", "throttle", "timeout", "reset"]

LOCK = threading.Condition()
CONFIG = {"enabled": False, "rate": 0.0, "mutating_rate": None, "kinds": KINDS,
          "phases": ["before", "after"], "hold_seconds": 4.0, "targets": None,
          "max_faults": None}
DEFAULTS = dict(CONFIG)
RNG = random.Random(0)
STATS = {"requests": 0, "forwarded": 0, "inflight": 0, "decided": 0, "injected": {},
         "by_target": {}, "kills": 0, "timeouts": {"abandoned": 0, "held_out": 0, "abandoned_after_max": 0}}
LOG = []
KILL = {}


def ec2_error(code, message):
    rid = str(uuid.uuid4())
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error></Errors><RequestID>{rid}</RequestID></Response>")


def hetzner_error(code, message):
    return json.dumps({"error": {"code": code, "message": message, "details": {}}})


def target_of(flavor, method, path, body):
    """EC2 action, or Hetzner `METHOD /path/{id}`."""
    if flavor == "aws":
        for src in (body.decode("utf-8", "replace"), urllib.parse.urlsplit(path).query):
            params = urllib.parse.parse_qs(src, keep_blank_values=True)
            if "Action" in params:
                return params["Action"][0]
        return method
    p = urllib.parse.urlsplit(path).path
    segs = ["{id}" if s.isdigit() else s for s in p.split("/")]
    return f"{method} {'/'.join(segs)}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = None
    flavor = "aws"

    def log_message(self, *args):
        pass

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass

    # ---- answers ----------------------------------------------------------------------
    def _reply(self, status, data, headers=()):
        data = data.encode() if isinstance(data, str) else data
        try:
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client is gone (killed, or its timeout fired)
            self.close_connection = True

    def _json(self, status, obj):
        self._reply(status, json.dumps(obj), [("Content-Type", "application/json")])

    def _reset(self):
        """Close the connection with an RST, no answer."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            self.connection.close()
        except OSError:
            pass

    def _hold(self):
        """Hold the request without answering until `hold_seconds` pass or the client gives
        up (closes the connection: its timeout fired); count which happened."""
        with LOCK:
            hold = float(CONFIG["hold_seconds"])
        start = time.time()
        gave_up = None
        while time.time() - start < hold:
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if not readable:
                continue
            try:
                data = self.connection.recv(1, socket.MSG_PEEK)
            except OSError:
                data = b""
            if not data:
                gave_up = time.time() - start
                break
            time.sleep(0.05)
        with LOCK:
            t = STATS["timeouts"]
            if gave_up is None:
                t["held_out"] += 1
            else:
                t["abandoned"] += 1
                t["abandoned_after_max"] = max(t["abandoned_after_max"], round(gave_up, 2))

    def _fault_answer(self, kind):
        if kind in ("timeout", "reset"):
            if kind == "timeout":
                self._hold()
            self._reset()
            return None
        if self.flavor == "aws":
            status, body = {
                "500": (500, ec2_error("InternalError", "An internal error has occurred (injected).")),
                "503": (503, ec2_error("Unavailable", "The service is unavailable (injected).")),
                "throttle": (400, ec2_error("RequestLimitExceeded", "Request limit exceeded.")),
            }[kind]
            self._reply(status, body, [("Content-Type", "text/xml;charset=UTF-8")])
            return status
        headers = [("Content-Type", "application/json")]
        if kind == "throttle":
            reset = int(time.time()) + RNG_LOCAL.choice([1, 2])
            headers += [("RateLimit-Limit", "3600"), ("RateLimit-Remaining", "0"),
                        ("RateLimit-Reset", str(reset))]
            status, body = 429, hetzner_error("rate_limit_exceeded", "limit of 3600 requests per hour reached (injected)")
        elif kind == "500":
            status, body = 500, hetzner_error("server_error", "internal server error (injected)")
        else:
            status, body = 503, hetzner_error("unavailable", "service unavailable (injected)")
        self._reply(status, body, headers)
        return status

    # ---- control ----------------------------------------------------------------------
    def _control(self, body):
        path = urllib.parse.urlsplit(self.path).path
        req = json.loads(body or b"{}") if self.command == "POST" else {}
        with LOCK:
            if path == "/__faults/config":
                CONFIG.update(DEFAULTS)
                CONFIG.update({k: v for k, v in req.items() if k in CONFIG})
                CONFIG["enabled"] = bool(req.get("enabled", True))
                RNG.seed(int(req.get("seed", 0)))
                RNG_LOCAL.seed(int(req.get("seed", 0)) + 1)
                return self._json(200, {"ok": True, "config": CONFIG})
            if path == "/__faults/disable":
                CONFIG["enabled"] = False
                return self._json(200, {"ok": True})
            if path == "/__faults/stats":
                return self._json(200, STATS)
            if path == "/__faults/requests":
                return self._json(200, LOG)
            if path == "/__faults/reset":
                LOG.clear()
                STATS.update({"requests": 0, "forwarded": 0, "decided": 0, "injected": {},
                              "by_target": {}, "kills": 0, "timeouts": {"abandoned": 0, "held_out": 0,
                                                       "abandoned_after_max": 0}})
                return self._json(200, {"ok": True})
            if path == "/__faults/kill_after":
                KILL.clear()
                if req:
                    KILL.update({"n": max(1, int(req["n"])), "phase": req.get("phase", "after"),
                                 "pid": req.get("pid"), "seen": 0})
                LOCK.notify_all()
                return self._json(200, {"ok": True})
            if path == "/__faults/kill_pid":
                if KILL:
                    KILL["pid"] = int(req["pid"])
                LOCK.notify_all()
                return self._json(200, {"ok": True, "armed": bool(KILL)})
        return self._json(404, {"error": "unknown control path"})

    # ---- proxying ---------------------------------------------------------------------
    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/__faults/"):
            return self._control(body)
        target = target_of(self.flavor, self.command, self.path, body)
        entry = {"method": self.command, "path": self.path, "target": target, "status": None,
                 "fault": None}
        with LOCK:
            STATS["requests"] += 1
            STATS["inflight"] += 1
            LOG.append(entry)
            fault = None
            mutating = not target.startswith("Describe") if self.flavor == "aws" \
                else self.command != "GET"
            rate = CONFIG["rate"]
            if mutating and CONFIG.get("mutating_rate") is not None:
                rate = CONFIG["mutating_rate"]
            eligible = CONFIG["enabled"] and (CONFIG["targets"] is None or target in CONFIG["targets"])
            budget = CONFIG["max_faults"]
            if budget is not None and STATS["decided"] >= int(budget):
                eligible = False
            if eligible and RNG.random() < float(rate):
                kind = RNG.choice(list(CONFIG["kinds"]))
                phases = ["before"] if kind == "throttle" else list(CONFIG["phases"])
                fault = (kind, RNG.choice(phases))
                STATS["decided"] += 1
            kill_phase = None
            if KILL:
                KILL["seen"] += 1
                if KILL["seen"] == KILL["n"]:
                    kill_phase = KILL["phase"]
        try:
            if kill_phase == "before":
                self._kill()
                entry["fault"] = "kill:before"
                return self._reset()
            if fault and fault[1] == "before":
                self._count(fault, target, entry)
                entry["status"] = self._fault_answer(fault[0])
                return None
            status, headers, data = self._forward(body)
            with LOCK:
                STATS["forwarded"] += 1
            if kill_phase == "after":
                self._kill()
                entry["fault"] = "kill:after"
                entry["status"] = status
                return self._reset()
            if fault:
                self._count(fault, target, entry)
                entry["status"] = self._fault_answer(fault[0])
                return None
            entry["status"] = status
            self._reply(status, data, headers)
            return None
        finally:
            with LOCK:
                STATS["inflight"] -= 1

    def _count(self, fault, target, entry):
        key = f"{fault[0]}:{fault[1]}"
        entry["fault"] = key
        with LOCK:
            STATS["injected"][key] = STATS["injected"].get(key, 0) + 1
            tk = f"{key} {target}"
            STATS["by_target"][tk] = STATS["by_target"].get(tk, 0) + 1

    def _kill(self):
        with LOCK:
            deadline = time.time() + 10
            while KILL.get("pid") is None and time.time() < deadline:
                LOCK.wait(0.05)
            pid = KILL.get("pid")
            KILL.clear()
            STATS["kills"] += 1
        if pid:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass

    def _forward(self, body):
        up = urllib.parse.urlsplit(self.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "connection", "keep-alive")}
        headers["Host"] = f"{up.hostname}:{up.port}"
        path = self.path
        if up.path and up.path != "/":
            path = up.path.rstrip("/") + path
        try:
            conn.request(self.command, path, body=body if body or self.command in ("POST", "PUT", "PATCH") else None,
                         headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out = [(k, v) for k, v in resp.getheaders()
                   if k.lower() not in ("transfer-encoding", "connection", "content-length", "server",
                                        "date", "keep-alive")]
            return resp.status, out, data
        finally:
            conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle


RNG_LOCAL = random.Random(1)


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client that was killed or gave up resets its connections: not worth a traceback.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--flavor", choices=["aws", "hetzner"], required=True)
    args = ap.parse_args()
    Handler.upstream = args.upstream
    Handler.flavor = args.flavor
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.request_queue_size = 128
    srv = Server(("127.0.0.1", args.port), Handler)
    print(f"READY {srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
