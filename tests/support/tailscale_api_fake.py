#!/usr/bin/env python3
"""A small stateful fake of the Tailscale API v2 endpoints agent-army uses.

    python3 tailscale_api_fake.py --port 0     # prints READY <port>; 127.0.0.1 only

API (shapes as documented at tailscale.com/api):
  POST   /api/v2/oauth/token                  form client_id, client_secret -> {access_token,...}
  GET    /api/v2/tailnet/{tailnet}/devices    -> {"devices": [Device]}
  DELETE /api/v2/device/{deviceId}            -> 200 {} | 404 {"message"}
  POST   /api/v2/tailnet/{tailnet}/keys       -> {id, key, created, expires, capabilities, description}
Auth: `Authorization: Bearer <token>`; tokens are API keys `tskey-api-*` or tokens issued by
/oauth/token. OAuth client: id `oauth-client-id`, secret `tskey-client-secret`.

Control (not part of the API):
  GET  /__fake/state          -> {"devices": [...], "keys": [...]} (keys with their capabilities)
  GET  /__fake/requests       -> [{"method","path","status"}]
  POST /__fake/devices        body [{"name": "host.tail1.ts.net", "hostname": "host"}] adds devices
  POST /__fake/inject         body {"status": 500, "count": N, "method": "DELETE"} fails the next
                              N matching API requests with that status
"""
import argparse
import json
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.RLock()
STATE = {"devices": {}, "keys": [], "tokens": {}, "requests": [], "inject": None, "next": 1000}
OAUTH_ID = "oauth-client-id"
OAUTH_SECRET = "tskey-client-secret"


def now(offset=0):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))


def new_id():
    STATE["next"] += 1
    return str(STATE["next"])


def device(name, hostname):
    i = new_id()
    return {
        "addresses": [f"100.64.0.{int(i) % 250}", f"fd7a:115c:a1e0::{i}"],
        "authorized": True,
        "blocksIncomingConnections": False,
        "clientVersion": "1.90.0",
        "created": now(-3600),
        "expires": now(86400 * 180),
        "hostname": hostname,
        "id": i,
        "isExternal": False,
        "keyExpiryDisabled": True,
        "lastSeen": now(),
        "machineKey": "mkey:" + secrets.token_hex(32),
        "name": name,
        "nodeId": "n" + secrets.token_hex(6) + "CNTRL",
        "nodeKey": "nodekey:" + secrets.token_hex(32),
        "os": "linux",
        "tags": ["tag:agent-army"],
        "updateAvailable": False,
        "user": "tagged-devices",
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if not self.path.startswith("/__fake/"):
            with LOCK:
                STATE["requests"].append({"method": self.command, "path": self.path, "status": status})

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def authed(self):
        auth = self.headers.get("Authorization", "")
        tok = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        if tok.startswith("tskey-api-"):
            return {"oauth": tok in STATE["tokens"]}
        return None

    def handle_any(self):
        raw = self.body()
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/__fake/"):
            return self.control(path, raw)
        with LOCK:
            inj = STATE["inject"]
            if inj and inj["count"] > 0 and inj.get("method", self.command) == self.command:
                inj["count"] -= 1
                return self.reply(inj["status"], {"message": "injected failure"})
        if path == "/api/v2/oauth/token" and self.command == "POST":
            form = urllib.parse.parse_qs(raw.decode())
            if form.get("client_id") != [OAUTH_ID] or form.get("client_secret") != [OAUTH_SECRET]:
                return self.reply(401, {"message": "invalid client credentials"})
            tok = "tskey-api-oauth-" + secrets.token_hex(8)
            with LOCK:
                STATE["tokens"][tok] = True
            return self.reply(200, {"access_token": tok, "token_type": "Bearer", "expires_in": 3600,
                                    "scope": "devices:core auth_keys"})
        who = self.authed()
        if who is None:
            return self.reply(401, {"message": "API token invalid"})
        parts = path.strip("/").split("/")
        # /api/v2/tailnet/{tailnet}/devices
        if len(parts) == 5 and parts[:3] == ["api", "v2", "tailnet"] and parts[4] == "devices" and self.command == "GET":
            with LOCK:
                return self.reply(200, {"devices": list(STATE["devices"].values())})
        # /api/v2/device/{id}
        if len(parts) == 4 and parts[:3] == ["api", "v2", "device"] and self.command == "DELETE":
            with LOCK:
                if STATE["devices"].pop(parts[3], None) is None:
                    return self.reply(404, {"message": "device not found"})
            return self.reply(200, {})
        # /api/v2/tailnet/{tailnet}/keys
        if len(parts) == 5 and parts[:3] == ["api", "v2", "tailnet"] and parts[4] == "keys" and self.command == "POST":
            try:
                req = json.loads(raw or b"{}")
                create = req["capabilities"]["devices"]["create"]
            except (ValueError, KeyError, TypeError):
                return self.reply(400, {"message": "capabilities.devices.create is required"})
            for k in ("reusable", "ephemeral", "preauthorized"):
                if not isinstance(create.get(k, False), bool):
                    return self.reply(400, {"message": f"{k} must be a boolean"})
            tags = create.get("tags") or []
            if who["oauth"] and not tags:
                return self.reply(400, {"message": "auth keys created by an OAuth client must have tags"})
            if any(not str(t).startswith("tag:") for t in tags):
                return self.reply(400, {"message": "invalid tag"})
            expiry = int(req.get("expirySeconds") or 90 * 86400)
            with LOCK:
                kid = "k" + new_id() + "CNTRL"
                key = {"id": kid, "key": f"tskey-auth-{kid}-{secrets.token_hex(16)}", "created": now(),
                       "expires": now(expiry), "capabilities": req["capabilities"],
                       "description": req.get("description", ""), "expirySeconds": expiry}
                STATE["keys"].append(key)
            return self.reply(200, {k: v for k, v in key.items() if k != "expirySeconds"})
        return self.reply(404, {"message": "not found"})

    def control(self, path, raw):
        with LOCK:
            if path == "/__fake/state":
                return self.reply(200, {"devices": list(STATE["devices"].values()), "keys": STATE["keys"]})
            if path == "/__fake/requests":
                return self.reply(200, STATE["requests"])
            if path == "/__fake/devices":
                for d in json.loads(raw or b"[]"):
                    dev = device(d["name"], d.get("hostname", d["name"].split(".")[0]))
                    STATE["devices"][dev["id"]] = dev
                return self.reply(200, {})
            if path == "/__fake/inject":
                STATE["inject"] = json.loads(raw or b"{}")
                return self.reply(200, {})
        return self.reply(404, {"message": "unknown control path"})

    do_GET = do_POST = do_DELETE = handle_any


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    print(f"READY {srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
