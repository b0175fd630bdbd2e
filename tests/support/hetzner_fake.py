#!/usr/bin/env python3
"""Stateful fake of the Hetzner Cloud API v1 (servers, actions, firewalls, ssh_keys).

Python 3.11 standard library only. Response shapes follow tests/fixtures/hetzner/cloud.spec.json (vendored)
(checked through `prism proxy --errors`, see tests/support/prism.sh).

Usage:  python3 hetzner_fake.py --port PORT [--seed N] [--action-polls 2] [--action-seconds 0]
Prints "READY <port>" on stdout once listening on 127.0.0.1. The API lives under /v1; a Prism
proxy in front must be given the upstream "http://127.0.0.1:PORT/v1" (clients then call /servers).

Actions finish after being polled --action-polls times (GET /v1/actions/{id}, or appearing in
GET /v1/actions?id=..), or --action-seconds after they started when that is > 0.

Control endpoints (not part of the API, never through Prism):
  GET  /__fake/requests         every /v1 request so far, oldest first:
                                [{method, path, query: {k: [v..]}, body (parsed JSON or null),
                                  status (answered code), content_type}]
  POST /__fake/reset            clear that log, pending injections and kill_after (state is kept)
  POST /__fake/inject           {"status":429|500|502|503|504|..., "count":N,
                                 optional "code", "method", "path" (prefix, e.g. "/v1/servers"),
                                 "after": true}
                                the next N matching /v1 requests answer that error; with "after"
                                the request is carried out first (an answer lost on the way back)
  POST /__fake/complete_actions finish every running action now
  POST /__fake/kill_after       {"method":"POST", "path":"/servers" (API path, /v1 optional), "pid":N,
                                 optional "count":1}: after the fake handled the count-th matching
                                /v1 request successfully (status < 300), SIGKILL process N before
                                the answer is sent (a client crash right after the API call).
                                Answers {"ok":true}; GET /__fake/kill_after shows what is pending.
  GET  /__fake/state            {servers, firewalls, ssh_keys, actions} as the API would render them,
                                plus server_inputs: {server id: {user_data, ssh_keys, root_password,
                                start_after_create, public_net}} (create inputs the API never shows)
"""
import argparse, base64, hashlib, itertools, json, math, os, random, re, signal, string, sys, threading, time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

RATE_LIMIT = 3600
USER_DATA_MAX = 32768
EU = ["fsn1", "nbg1", "hel1"]
LOCATIONS = {
    "fsn1": (1, "Falkenstein DC Park 1", "DE", "Falkenstein", 50.47612, 12.370071, "eu-central"),
    "nbg1": (2, "Nuremberg DC Park 1", "DE", "Nuremberg", 49.452102, 11.076665, "eu-central"),
    "hel1": (3, "Helsinki DC Park 1", "FI", "Helsinki", 60.169855, 24.938379, "eu-central"),
    "ash": (4, "Ashburn, VA", "US", "Ashburn, VA", 39.045821, -77.487073, "us-east"),
    "hil": (5, "Hillsboro, OR", "US", "Hillsboro, OR", 45.54222, -122.95138, "us-west"),
    "sin": (6, "Singapore", "SG", "Singapore", 1.283333, 103.833333, "ap-southeast"),
}
ALL = list(LOCATIONS)
# name: (id, cores, memory GB, disk GB, cpu_type, architecture, monthly net EUR, locations)
SERVER_TYPES = {
    "cx22": (104, 2, 4.0, 40, "shared", "x86", "3.79", EU),
    "cx23": (114, 2, 4.0, 40, "shared", "x86", "3.49", EU),
    "cx32": (105, 4, 8.0, 80, "shared", "x86", "6.80", EU),
    "cpx11": (22, 2, 2.0, 40, "shared", "x86", "4.35", ALL),
    "cpx21": (23, 3, 4.0, 80, "shared", "x86", "7.55", ALL),
    "cax11": (45, 2, 4.0, 40, "shared", "arm", "3.79", EU),
    "ccx13": (96, 2, 8.0, 80, "dedicated", "x86", "12.49", ALL),
}
IMAGES = {  # name: (id, os_flavor, os_version, description)
    "ubuntu-24.04": (161547269, "ubuntu", "24.04", "Ubuntu 24.04"),
    "ubuntu-22.04": (67794396, "ubuntu", "22.04", "Ubuntu 22.04"),
    "debian-12": (114690387, "debian", "12", "Debian 12"),
}
DEFAULT_ERR = {400: "json_error", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 412: "resource_unavailable",
               422: "invalid_input", 423: "locked", 429: "rate_limit_exceeded", 500: "server_error",
               502: "bad_gateway", 503: "unavailable", 504: "timeout"}
HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
                      r"(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")
LABEL_NAME = re.compile(r"^[a-zA-Z0-9]([-_.a-zA-Z0-9]{0,61}[a-zA-Z0-9])?$")
DNS_SUB = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

def now_iso(t=None):
    return datetime.fromtimestamp(t if t is not None else time.time(), timezone.utc).replace(microsecond=0).isoformat()

class ApiError(Exception):
    def __init__(self, status, code=None, message="", details=None):
        super().__init__(message)
        self.status, self.code, self.message = status, code or DEFAULT_ERR.get(status, "server_error"), message
        self.details = details if details is not None else {}

def invalid(field, msg):
    return ApiError(422, "invalid_input", f"invalid input in field '{field}': {msg}",
                    {"fields": [{"name": field, "messages": [msg]}]})

def valid_labels(labels, field="labels"):
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise invalid(field, "must be an object")
    for k, v in labels.items():
        prefix, _, name = k.rpartition("/")
        if not isinstance(v, str) or not LABEL_NAME.match(name) or (prefix and not DNS_SUB.match(prefix)) \
                or prefix == "hetzner.cloud" or (v and not LABEL_NAME.match(v)):
            raise invalid(field, f"invalid label {k!r}={v!r}")
    return dict(labels)

def parse_selector(sel):
    """Hetzner label selector -> list of predicates on a labels dict. Raises ApiError."""
    preds = []
    for expr in [e.strip() for e in re.split(r",(?![^(]*\))", sel) if e.strip()]:
        m = re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^)]*)\)", expr)
        if m:
            k, op, vals = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            preds.append((lambda L, k=k, vals=vals: L.get(k) in vals) if op == "in"
                         else (lambda L, k=k, vals=vals: L.get(k) not in vals))
            continue
        m = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*([^=!\s]*)", expr)
        if m:
            k, op, v = m.groups()
            preds.append((lambda L, k=k, v=v: L.get(k) == v) if op != "!=" else (lambda L, k=k, v=v: L.get(k) != v))
            continue
        m = re.fullmatch(r"(!?)([^=!\s()]+)", expr)
        if m:
            neg, k = m.groups()
            preds.append((lambda L, k=k: k not in L) if neg else (lambda L, k=k: k in L))
            continue
        raise invalid("label_selector", f"unable to parse {expr!r}")
    return preds

def ssh_fingerprint(public_key):
    parts = public_key.strip().split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise invalid("public_key", "invalid public key")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise invalid("public_key", "invalid public key") from None
    if len(blob) < 4 or blob[4:4 + int.from_bytes(blob[:4], "big")].decode("latin1") != parts[0]:
        raise invalid("public_key", "invalid public key")
    h = hashlib.md5(blob).hexdigest()
    return ":".join(h[i:i + 2] for i in range(0, 32, 2))

class State:
    def __init__(self, seed, action_polls, action_seconds):
        self.lock = threading.RLock()
        self.rng = random.Random(seed)
        self.action_polls, self.action_seconds = action_polls, action_seconds
        self.ids = {"server": itertools.count(4200001), "action": itertools.count(9000001),
                    "firewall": itertools.count(770001), "ssh_key": itertools.count(31001),
                    "primary_ip": itertools.count(120001)}
        self.servers, self.actions, self.firewalls, self.ssh_keys = {}, {}, {}, {}
        self.requests, self.injections = [], []
        self.kill = None  # {"method", "path", "pid", "count"} from POST /__fake/kill_after
        self.bucket, self.bucket_t = float(RATE_LIMIT), time.time()
        self.ip_counter = itertools.count(2)

    def new_id(self, kind):
        return next(self.ids[kind])

    # ---- rate limit -------------------------------------------------------------------
    def take_token(self):
        t = time.time()
        self.bucket = min(RATE_LIMIT, self.bucket + (t - self.bucket_t))
        self.bucket_t = t
        ok = self.bucket >= 1
        if ok:
            self.bucket -= 1
        return ok

    def rate_headers(self, exhausted=False):
        t = time.time()
        if exhausted:
            return {"RateLimit-Limit": str(RATE_LIMIT), "RateLimit-Remaining": "0", "RateLimit-Reset": str(int(t) + 1)}
        rem = int(self.bucket)
        return {"RateLimit-Limit": str(RATE_LIMIT), "RateLimit-Remaining": str(rem),
                "RateLimit-Reset": str(int(t + math.ceil(RATE_LIMIT - self.bucket)))}

    # ---- actions ----------------------------------------------------------------------
    def new_action(self, command, resources, on_done=None):
        a = {"id": self.new_id("action"), "command": command, "status": "running", "progress": 0,
             "started": now_iso(), "t0": time.time(), "finished": None, "error": None, "polls": 0,
             "resources": [{"id": i, "type": t} for t, i in resources], "on_done": on_done}
        self.actions[a["id"]] = a
        return a

    def finish(self, a):
        if a["status"] == "running":
            a.update(status="success", progress=100, finished=now_iso())
            if a["on_done"]:
                a["on_done"]()

    def poll(self, a):
        a["polls"] += 1
        if a["polls"] >= self.action_polls:
            self.finish(a)
        elif a["status"] == "running":
            a["progress"] = min(99, int(100 * a["polls"] / self.action_polls))

    def tick(self):
        if self.action_seconds > 0:
            for a in list(self.actions.values()):
                if a["status"] == "running" and time.time() - a["t0"] >= self.action_seconds:
                    self.finish(a)

    @staticmethod
    def r_action(a):
        return {k: a[k] for k in ("id", "command", "status", "progress", "started", "finished", "resources", "error")}

    # ---- rendering --------------------------------------------------------------------
    @staticmethod
    def r_location(name):
        i, desc, country, city, lat, lon, zone = LOCATIONS[name]
        return {"id": i, "name": name, "description": desc, "country": country, "city": city,
                "latitude": lat, "longitude": lon, "network_zone": zone}

    @staticmethod
    def r_server_type(name):
        i, cores, mem, disk, cpu, arch, monthly, locs = SERVER_TYPES[name]
        net_m = float(monthly)
        price = lambda v: {"net": f"{v:.10f}", "gross": f"{v * 1.19:.10f}"}
        return {"id": i, "name": name, "description": name.upper(), "cores": cores, "memory": mem, "disk": disk,
                "deprecated": False, "deprecation": None, "storage_type": "local", "cpu_type": cpu,
                "category": "shared_vcpu" if cpu == "shared" else "dedicated_vcpu", "architecture": arch,
                "prices": [{"location": l, "price_hourly": price(net_m / 730), "price_monthly": price(net_m),
                            "included_traffic": 21990232555520 if l in EU else 1099511627776,
                            "price_per_tb_traffic": price(1.0)} for l in locs],
                "locations": [{"id": LOCATIONS[l][0], "name": l, "deprecation": None, "available": True,
                               "recommended": l == locs[0]} for l in locs]}

    @staticmethod
    def r_image(name, arch):
        i, flavor, ver, desc = IMAGES[name]
        return {"id": i + (1 if arch == "arm" else 0), "type": "system", "status": "available", "name": name,
                "description": desc, "image_size": None, "disk_size": 5, "created": "2024-04-25T00:00:00+00:00",
                "created_from": None, "bound_to": None, "os_flavor": flavor, "os_version": ver,
                "rapid_deploy": True, "protection": {"delete": False}, "deprecated": None, "deleted": None,
                "labels": {}, "architecture": arch}

    def firewalls_of(self, sid):
        return [f for f in self.firewalls.values() if sid in self.fw_servers(f)]

    def fw_servers(self, f):
        ids = []
        for e in f["applied_to"]:
            if e["type"] == "server":
                ids.append(e["server"]["id"])
            else:
                ids += self.selector_servers(e["label_selector"]["selector"])
        return [i for i in dict.fromkeys(ids) if i in self.servers]

    def selector_servers(self, sel):
        preds = parse_selector(sel)
        return [s["id"] for s in self.servers.values() if all(p(s["labels"]) for p in preds)]

    def r_server(self, s):
        st = s["server_type"]
        arch = SERVER_TYPES[st][5]
        return {
            "id": s["id"], "name": s["name"], "status": s["status"], "created": s["created"],
            "public_net": {"ipv4": s["ipv4"], "ipv6": s["ipv6"], "floating_ips": [],
                           "firewalls": [{"id": f["id"], "status": "applied"} for f in self.firewalls_of(s["id"])]},
            "private_net": [], "server_type": self.r_server_type(st), "location": self.r_location(s["location"]),
            "image": self.r_image(s["image"], arch), "iso": None, "rescue_enabled": False, "locked": False,
            "backup_window": None, "outgoing_traffic": 0, "ingoing_traffic": 0,
            "included_traffic": 21990232555520 if s["location"] in EU else 1099511627776,
            "protection": {"delete": False, "rebuild": False}, "labels": dict(s["labels"]), "volumes": [],
            "load_balancers": [], "primary_disk_size": SERVER_TYPES[st][3], "placement_group": None}

    def r_firewall(self, f):
        applied = []
        for e in f["applied_to"]:
            if e["type"] == "server":
                applied.append({"type": "server", "server": {"id": e["server"]["id"]}})
            else:
                applied.append({"type": "label_selector", "label_selector": dict(e["label_selector"]),
                                "applied_to_resources": [{"type": "server", "server": {"id": i}}
                                                         for i in self.selector_servers(e["label_selector"]["selector"])]})
        return {"id": f["id"], "name": f["name"], "labels": dict(f["labels"]), "created": f["created"],
                "rules": [dict(r) for r in f["rules"]], "applied_to": applied}

    @staticmethod
    def r_ssh_key(k):
        return {key: k[key] for key in ("id", "name", "fingerprint", "public_key", "labels", "created")}

    def dump(self):
        return {"servers": [self.r_server(s) for s in self.servers.values()],
                "firewalls": [self.r_firewall(f) for f in self.firewalls.values()],
                "ssh_keys": [self.r_ssh_key(k) for k in self.ssh_keys.values()],
                "actions": [self.r_action(a) for a in self.actions.values()],
                "server_inputs": {str(s["id"]): {k: s.get(k) for k in
                                                 ("user_data", "ssh_keys", "root_password", "start", "public_net")}
                                  for s in self.servers.values()}}

def paginate(items, q, key):
    def num(name, default):
        raw = q.get(name, [str(default)])[-1]
        if not raw.isdigit() or int(raw) < 1:
            raise invalid(name, "must be a positive integer")
        return int(raw)
    page, per_page = num("page", 1), min(num("per_page", 25), 50)
    total = len(items)
    last = max(1, math.ceil(total / per_page))
    body = {key: items[(page - 1) * per_page: page * per_page],
            "meta": {"pagination": {"page": page, "per_page": per_page,
                                    "previous_page": page - 1 if page > 1 else None,
                                    "next_page": page + 1 if page < last else None,
                                    "last_page": last, "total_entries": total}}}
    return body, (page, per_page, last)

def apply_filters(objs, q, sort_keys=("id", "name", "created")):
    if "name" in q:
        objs = [o for o in objs if o["name"] == q["name"][-1]]
    if "label_selector" in q:
        preds = parse_selector(q["label_selector"][-1])
        objs = [o for o in objs if all(p(o["labels"]) for p in preds)]
    objs = sorted(objs, key=lambda o: o["id"])
    for spec in reversed(q.get("sort", [])):
        field, _, direction = spec.partition(":")
        if field not in sort_keys or direction not in ("", "asc", "desc"):
            raise invalid("sort", f"invalid sort {spec!r}")
        objs = sorted(objs, key=lambda o: o[field], reverse=direction == "desc")
    return objs

class Api:
    """Route handlers. Each gets (state, match groups, query dict, body) and returns (status, obj)."""

    def __init__(self, st):
        self.st = st
        self.routes = [
            ("GET", r"/v1/servers", self.list_servers), ("POST", r"/v1/servers", self.create_server),
            ("GET", r"/v1/servers/(\d+)", self.get_server), ("DELETE", r"/v1/servers/(\d+)", self.delete_server),
            ("GET", r"/v1/actions", self.list_actions), ("GET", r"/v1/actions/(\d+)", self.get_action),
            ("GET", r"/v1/firewalls", self.list_firewalls), ("POST", r"/v1/firewalls", self.create_firewall),
            ("GET", r"/v1/firewalls/(\d+)", self.get_firewall), ("DELETE", r"/v1/firewalls/(\d+)", self.delete_firewall),
            ("POST", r"/v1/firewalls/(\d+)/actions/set_rules", self.fw_set_rules),
            ("POST", r"/v1/firewalls/(\d+)/actions/apply_to_resources", self.fw_apply),
            ("POST", r"/v1/firewalls/(\d+)/actions/remove_from_resources", self.fw_remove),
            ("GET", r"/v1/server_types", self.list_server_types),
            ("GET", r"/v1/ssh_keys", self.list_ssh_keys), ("POST", r"/v1/ssh_keys", self.create_ssh_key),
            ("GET", r"/v1/ssh_keys/(\d+)", self.get_ssh_key), ("DELETE", r"/v1/ssh_keys/(\d+)", self.delete_ssh_key),
        ]

    def dispatch(self, method, path, q, body):
        known = False
        for m, pat, fn in self.routes:
            mt = re.fullmatch(pat, path)
            if mt:
                known = True
                if m == method:
                    return fn(*mt.groups(), q=q, body=body)
        if known:
            raise ApiError(405, "method_not_allowed", f"method {method} is not allowed for {path}")
        raise ApiError(404, "not_found", f"route {method} {path} not found")

    # ---- helpers ----------------------------------------------------------------------
    def _get(self, table, i, what):
        obj = table.get(int(i))
        if obj is None:
            raise ApiError(404, "not_found", f"{what} with ID '{i}' not found")
        return obj

    @staticmethod
    def _obj(body):
        if not isinstance(body, dict):
            raise ApiError(400, "json_error", "request body must be a JSON object")
        return body

    @staticmethod
    def _str(body, field, required=True):
        v = body.get(field)
        if v is None and not required:
            return None
        if not isinstance(v, str) or (required and v == ""):
            raise invalid(field, "is required" if v is None else "must be a non-empty string")
        return v

    def _unique(self, table, name, what):
        if any(o["name"] == name for o in table.values()):
            raise ApiError(409, "uniqueness_error", f"{what} name is already used", {"fields": [{"name": "name"}]})

    @staticmethod
    def _lookup(catalog, ref, field):
        for name, row in catalog.items():
            if ref == name or ref == str(row[0]):
                return name
        raise invalid(field, f"{field} {ref!r} not found")

    def _rules(self, rules):
        if rules is None:
            return []
        if not isinstance(rules, list):
            raise invalid("rules", "must be an array")
        out = []
        for r in rules:
            if not isinstance(r, dict) or r.get("direction") not in ("in", "out") or \
                    r.get("protocol") not in ("tcp", "udp", "icmp", "esp", "gre"):
                raise invalid("rules", "each rule needs direction in/out and protocol tcp/udp/icmp/esp/gre")
            port = r.get("port")
            if (r["protocol"] in ("tcp", "udp")) != (port is not None):
                raise invalid("rules", "port is required for tcp/udp and not allowed otherwise")
            if port is not None and not (isinstance(port, str) and re.fullmatch(r"\d{1,5}(-\d{1,5})?|any", port)):
                raise invalid("rules", f"invalid port {port!r}")
            ips_field = "source_ips" if r["direction"] == "in" else "destination_ips"
            if not r.get(ips_field):
                raise invalid("rules", f"{ips_field} is required for direction {r['direction']}")
            out.append({"description": r.get("description"), "direction": r["direction"],
                        "source_ips": list(r.get("source_ips") or []),
                        "destination_ips": list(r.get("destination_ips") or []),
                        "protocol": r["protocol"], "port": port})
        return out

    # ---- servers ----------------------------------------------------------------------
    def list_servers(self, q, body):
        st = self.st
        objs = apply_filters(list(st.servers.values()), q)
        if "status" in q:
            objs = [o for o in objs if o["status"] in q["status"]]
        res, _ = paginate(objs, q, "servers")
        res["servers"] = [st.r_server(s) for s in res["servers"]]
        return 200, res

    def get_server(self, i, q, body):
        return 200, {"server": self.st.r_server(self._get(self.st.servers, i, "server"))}

    def create_server(self, q, body):
        st, b = self.st, self._obj(body)
        name = self._str(b, "name")
        if not HOSTNAME.match(name):
            raise invalid("name", "must be a valid hostname (RFC 1123)")
        stype = self._lookup(SERVER_TYPES, self._str(b, "server_type"), "server_type")
        image = self._lookup(IMAGES, self._str(b, "image"), "image")
        loc_ref = self._str(b, "location", required=False)
        location = self._lookup(LOCATIONS, loc_ref, "location") if loc_ref else SERVER_TYPES[stype][7][0]
        if location not in SERVER_TYPES[stype][7]:
            raise ApiError(422, "invalid_input", "unsupported location for server type", {})
        user_data = b.get("user_data")
        if user_data is not None and (not isinstance(user_data, str) or len(user_data.encode()) > USER_DATA_MAX):
            raise invalid("user_data", "is too long")
        labels = valid_labels(b.get("labels"))
        keys = b.get("ssh_keys") or []
        if not isinstance(keys, list):
            raise invalid("ssh_keys", "must be an array")
        for ref in keys:
            if not any(str(ref) in (k["name"], str(k["id"])) for k in st.ssh_keys.values()):
                raise invalid("ssh_keys", f"SSH key {ref!r} not found")
        fw_ids = []
        for e in b.get("firewalls") or []:
            fid = e.get("firewall") if isinstance(e, dict) else None
            if not isinstance(fid, int) or fid not in st.firewalls:
                raise invalid("firewalls", f"firewall {fid!r} not found")
            fw_ids.append(fid)
        pn = b.get("public_net") or {}
        start = b.get("start_after_create", True)
        self._unique(st.servers, name, "server")
        sid = st.new_id("server")
        n = next(st.ip_counter)
        ipv4 = None if pn.get("enable_ipv4") is False else {
            "id": st.new_id("primary_ip"), "ip": f"127.77.{n // 250}.{n % 250 + 1}", "blocked": False,
            "dns_ptr": f"static.{n % 250 + 1}.{n // 250}.77.127.clients.your-server.de"}
        ipv6 = None if pn.get("enable_ipv6") is False else {
            "id": st.new_id("primary_ip"), "ip": f"2001:db8:{n:x}::/64", "blocked": False, "dns_ptr": []}
        srv = {"id": sid, "name": name, "status": "initializing", "created": now_iso(), "server_type": stype,
               "image": image, "location": location, "labels": labels, "ipv4": ipv4, "ipv6": ipv6,
               "user_data": user_data, "ssh_keys": [str(k) for k in keys], "start": start, "public_net": pn}
        st.servers[sid] = srv
        for fid in fw_ids:
            st.firewalls[fid]["applied_to"].append({"type": "server", "server": {"id": sid}})

        def created():
            if srv["status"] == "initializing":
                srv["status"] = "running" if start else "off"
        action = st.new_action("create_server", [("server", sid)], created)
        nxt = []
        if start:
            nxt.append(st.new_action("start_server", [("server", sid)], created))
        for fid in fw_ids:
            nxt.append(st.new_action("apply_firewall", [("firewall", fid), ("server", sid)]))
        pw = None if keys else "".join(st.rng.choice(string.ascii_letters + string.digits) for _ in range(20))
        srv["root_password"] = pw
        return 201, {"server": st.r_server(srv), "action": st.r_action(action),
                     "next_actions": [st.r_action(a) for a in nxt], "root_password": pw}

    def delete_server(self, i, q, body):
        st = self.st
        srv = self._get(st.servers, i, "server")
        if srv.get("delete_action"):
            return 200, {"action": st.r_action(srv["delete_action"])}
        srv["status"] = "deleting"

        def gone():
            st.servers.pop(srv["id"], None)
            for f in st.firewalls.values():
                f["applied_to"] = [e for e in f["applied_to"]
                                   if not (e["type"] == "server" and e["server"]["id"] == srv["id"])]
        srv["delete_action"] = st.new_action("delete_server", [("server", srv["id"])], gone)
        return 200, {"action": st.r_action(srv["delete_action"])}

    # ---- actions ----------------------------------------------------------------------
    def list_actions(self, q, body):
        st = self.st
        ids = q.get("id", [])
        if not ids or not all(x.isdigit() for x in ids):
            raise invalid("id", "at least one integer id is required")
        found = [st.actions[int(x)] for x in dict.fromkeys(ids) if int(x) in st.actions]
        objs = sorted(found, key=lambda a: a["id"])
        if "status" in q:
            objs = [a for a in objs if a["status"] in q["status"]]
        res, _ = paginate(objs, q, "actions")
        for a in res["actions"]:
            st.poll(a)
        res["actions"] = [st.r_action(a) for a in res["actions"]]
        return 200, res

    def get_action(self, i, q, body):
        a = self._get(self.st.actions, i, "action")
        self.st.poll(a)
        return 200, {"action": self.st.r_action(a)}

    # ---- firewalls --------------------------------------------------------------------
    def list_firewalls(self, q, body):
        res, _ = paginate(apply_filters(list(self.st.firewalls.values()), q), q, "firewalls")
        res["firewalls"] = [self.st.r_firewall(f) for f in res["firewalls"]]
        return 200, res

    def get_firewall(self, i, q, body):
        return 200, {"firewall": self.st.r_firewall(self._get(self.st.firewalls, i, "firewall"))}

    def _targets(self, entries, field):
        if not isinstance(entries, list):
            raise invalid(field, "must be an array")
        out = []
        for e in entries:
            if isinstance(e, dict) and e.get("type") == "server" and isinstance(e.get("server"), dict) \
                    and isinstance(e["server"].get("id"), int):
                if e["server"]["id"] not in self.st.servers:
                    raise ApiError(404, "firewall_resource_not_found", f"server {e['server']['id']} not found")
                out.append({"type": "server", "server": {"id": e["server"]["id"]}})
            elif isinstance(e, dict) and e.get("type") == "label_selector" and \
                    isinstance(e.get("label_selector"), dict) and isinstance(e["label_selector"].get("selector"), str):
                parse_selector(e["label_selector"]["selector"])
                out.append({"type": "label_selector", "label_selector": {"selector": e["label_selector"]["selector"]}})
            else:
                raise invalid(field, "entries need type server with server.id, or label_selector with selector")
        return out

    def _apply_actions(self, f, targets, command):
        acts = []
        for t in targets:
            if t["type"] == "server":
                acts.append(self.st.new_action(command, [("server", t["server"]["id"]), ("firewall", f["id"])]))
            else:
                acts.append(self.st.new_action(command, [("firewall", f["id"])]))
        return acts

    def create_firewall(self, q, body):
        st, b = self.st, self._obj(body)
        name = self._str(b, "name")
        labels, rules = valid_labels(b.get("labels")), self._rules(b.get("rules"))
        targets = self._targets(b.get("apply_to") or [], "apply_to")
        self._unique(st.firewalls, name, "firewall")
        f = {"id": st.new_id("firewall"), "name": name, "labels": labels, "created": now_iso(), "rules": rules,
             "applied_to": []}
        st.firewalls[f["id"]] = f
        acts = [st.new_action("set_firewall_rules", [("firewall", f["id"])])] if rules else []
        for t in targets:
            if t not in f["applied_to"]:
                f["applied_to"].append(t)
        acts += self._apply_actions(f, targets, "apply_firewall")
        return 201, {"firewall": st.r_firewall(f), "actions": [st.r_action(a) for a in acts]}

    def delete_firewall(self, i, q, body):
        f = self._get(self.st.firewalls, i, "firewall")
        if f["applied_to"]:
            raise ApiError(422, "resource_in_use", "firewall is still applied to a resource", {})
        del self.st.firewalls[f["id"]]
        return 204, None

    def fw_set_rules(self, i, q, body):
        st, b = self.st, self._obj(body)
        f = self._get(st.firewalls, i, "firewall")
        if "rules" not in b:
            raise invalid("rules", "is required")
        f["rules"] = self._rules(b["rules"])
        acts = [st.new_action("set_firewall_rules", [("firewall", f["id"])])]
        acts += [st.new_action("apply_firewall", [("firewall", f["id"]), ("server", sid)]) for sid in st.fw_servers(f)]
        return 201, {"actions": [st.r_action(a) for a in acts]}

    def fw_apply(self, i, q, body):
        st, b = self.st, self._obj(body)
        f = self._get(st.firewalls, i, "firewall")
        if "apply_to" not in b:
            raise invalid("apply_to", "is required")
        targets = self._targets(b["apply_to"], "apply_to")
        for t in targets:
            if t in f["applied_to"]:
                raise ApiError(422, "firewall_already_applied", "firewall is already applied to resource", {})
        f["applied_to"] += targets
        return 201, {"actions": [st.r_action(a) for a in self._apply_actions(f, targets, "apply_firewall")]}

    def fw_remove(self, i, q, body):
        st, b = self.st, self._obj(body)
        f = self._get(st.firewalls, i, "firewall")
        if "remove_from" not in b:
            raise invalid("remove_from", "is required")
        targets = self._targets(b["remove_from"], "remove_from")
        for t in targets:
            if t not in f["applied_to"]:
                raise ApiError(404, "firewall_resource_not_found", "firewall is not applied to that resource", {})
        f["applied_to"] = [e for e in f["applied_to"] if e not in targets]
        return 201, {"actions": [st.r_action(a) for a in self._apply_actions(f, targets, "remove_firewall")]}

    # ---- server types (catalogue, with prices per location) ----------------------------
    def list_server_types(self, q, body):
        names = sorted(SERVER_TYPES)
        if "name" in q:
            names = [n for n in names if n == q["name"][-1]]
        res, _ = paginate(names, q, "server_types")
        res["server_types"] = [self.st.r_server_type(n) for n in res["server_types"]]
        return 200, res

    # ---- ssh keys ---------------------------------------------------------------------
    def list_ssh_keys(self, q, body):
        objs = apply_filters(list(self.st.ssh_keys.values()), q, ("id", "name"))
        if "fingerprint" in q:
            objs = [k for k in objs if k["fingerprint"] == q["fingerprint"][-1]]
        res, _ = paginate(objs, q, "ssh_keys")
        res["ssh_keys"] = [self.st.r_ssh_key(k) for k in res["ssh_keys"]]
        return 200, res

    def get_ssh_key(self, i, q, body):
        return 200, {"ssh_key": self.st.r_ssh_key(self._get(self.st.ssh_keys, i, "SSH key"))}

    def create_ssh_key(self, q, body):
        st, b = self.st, self._obj(body)
        name, pub = self._str(b, "name"), self._str(b, "public_key")
        labels, fp = valid_labels(b.get("labels")), ssh_fingerprint(pub)
        self._unique(st.ssh_keys, name, "SSH key")
        if any(k["fingerprint"] == fp for k in st.ssh_keys.values()):
            raise ApiError(409, "uniqueness_error", "SSH key with the same fingerprint already exists",
                           {"fields": [{"name": "public_key"}]})
        k = {"id": st.new_id("ssh_key"), "name": name, "fingerprint": fp, "public_key": pub.strip(),
             "labels": labels, "created": now_iso()}
        st.ssh_keys[k["id"]] = k
        return 201, {"ssh_key": st.r_ssh_key(k)}

    def delete_ssh_key(self, i, q, body):
        del self.st.ssh_keys[self._get(self.st.ssh_keys, i, "SSH key")["id"]]
        return 204, None

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hetzner-fake/1"
    st: State = None
    api: Api = None

    def log_message(self, fmt, *args):  # keep stdout/stderr quiet
        pass

    def _send(self, status, obj, headers=None):
        data = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if status != 204:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if status != 204:
            self.wfile.write(data)

    def _handle(self):
        u = urlsplit(self.path)
        q = parse_qs(u.query, keep_blank_values=True)
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n > 0 else b""
        if u.path.startswith("/__fake/"):
            return self._control(u.path, raw)
        st = self.st
        with st.lock:
            body, bad_json = None, False
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    bad_json = True
            entry = {"method": self.command, "path": u.path, "query": q, "status": None,
                     "body": raw.decode("latin1") if bad_json else body,
                     "content_type": self.headers.get("Content-Type")}
            st.requests.append(entry)
            ok = st.take_token()
            headers = st.rate_headers()
            auth = self.headers.get("Authorization", "")
            try:
                inj = next((i for i in st.injections if i["count"] > 0 and u.path.startswith(i.get("path", ""))
                            and self.command == i.get("method", self.command).upper()), None)
                if inj:
                    inj["count"] -= 1
                    if inj["status"] == 429:
                        headers = st.rate_headers(exhausted=True)
                    if not inj.get("after"):
                        raise ApiError(inj["status"], inj.get("code"), inj.get("message", "injected failure"))
                if not ok:
                    raise ApiError(429, "rate_limit_exceeded", "limit of 3600 requests per hour reached")
                if not auth.startswith("Bearer ") or not auth[7:].strip():
                    raise ApiError(401, "unauthorized", "unable to authenticate")
                if not u.path.startswith("/v1/") and u.path != "/v1":
                    raise ApiError(404, "not_found", f"route {u.path} not found")
                if bad_json:
                    raise ApiError(400, "json_error", "unable to parse JSON body")
                st.tick()
                status, obj = self.api.dispatch(self.command, u.path.rstrip("/") or "/", q, body)
                if inj:  # "after": done, but the client gets an error
                    raise ApiError(inj["status"], inj.get("code"),
                                   inj.get("message", "injected failure after the request was carried out"))
                if obj and "meta" in obj:
                    headers["Link"] = self._link(u.path, q, obj["meta"]["pagination"])
            except ApiError as e:
                status, obj = e.status, {"error": {"code": e.code, "message": e.message, "details": e.details}}
            except Exception as e:  # a bug in the fake: report it like the real API would
                status, obj = 500, {"error": {"code": "server_error", "message": f"fake bug: {e!r}", "details": {}}}
            entry["status"] = status
            kill = self._kill_due(u.path, status)
        if kill:
            try:
                os.kill(kill, signal.SIGKILL)
            except OSError:  # already gone
                pass
        self._send(status, obj, headers)

    def _kill_due(self, path, status):
        """The pid to SIGKILL now, if this answered request completes a kill_after order."""
        k = self.st.kill
        if not k or status >= 300 or self.command != k["method"] or path.rstrip("/") != k["path"]:
            return None
        k["count"] -= 1
        if k["count"] > 0:
            return None
        self.st.kill = None
        return k["pid"]

    def _link(self, path, q, p):
        base = f"http://{self.headers.get('Host', '127.0.0.1')}{path}"
        other = "&".join(f"{k}={v}" for k, vs in q.items() if k not in ("page", "per_page") for v in vs)
        rels = [("prev", p["previous_page"]), ("next", p["next_page"]), ("last", p["last_page"])]
        return ", ".join(f'<{base}?{other + "&" if other else ""}page={n}&per_page={p["per_page"]}>; rel="{r}"'
                         for r, n in rels if n is not None)

    def _control(self, path, raw):
        st = self.st
        with st.lock:
            if path == "/__fake/requests" and self.command == "GET":
                return self._send(200, st.requests)
            if path == "/__fake/reset" and self.command == "POST":
                st.requests.clear()
                st.injections.clear()
                st.kill = None
                return self._send(200, {"ok": True})
            if path == "/__fake/state" and self.command == "GET":
                return self._send(200, st.dump())
            if path == "/__fake/complete_actions" and self.command == "POST":
                for a in list(st.actions.values()):
                    st.finish(a)
                return self._send(200, {"ok": True})
            if path == "/__fake/kill_after" and self.command == "GET":
                return self._send(200, {"pending": st.kill})
            if path == "/__fake/kill_after" and self.command == "POST":
                try:
                    spec = json.loads(raw or b"{}")
                    api_path = "/" + str(spec["path"]).strip("/")
                    if not api_path.startswith("/v1/"):
                        api_path = "/v1" + api_path
                    st.kill = {"method": str(spec.get("method", "POST")).upper(), "path": api_path,
                               "pid": int(spec["pid"]), "count": max(1, int(spec.get("count", 1)))}
                except (ValueError, KeyError, TypeError) as e:
                    return self._send(400, {"error": f"bad kill_after spec: {e}"})
                return self._send(200, {"ok": True})
            if path == "/__fake/inject" and self.command == "POST":
                try:
                    spec = json.loads(raw or b"{}")
                    spec["status"], spec["count"] = int(spec["status"]), int(spec.get("count", 1))
                except (ValueError, KeyError, TypeError) as e:
                    return self._send(400, {"error": f"bad inject spec: {e}"})
                st.injections.append(spec)
                return self._send(200, {"ok": True, "pending": sum(i["count"] for i in st.injections)})
        self._send(404, {"error": "unknown control endpoint"})

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--action-polls", type=int, default=2, help="polls after which an action succeeds")
    ap.add_argument("--action-seconds", type=float, default=0, help="also succeed actions after N seconds (0=off)")
    args = ap.parse_args()
    st = State(args.seed, max(1, args.action_polls), args.action_seconds)
    Handler.st, Handler.api = st, Api(st)
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"READY {srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
