#!/usr/bin/env python3
"""A recording fake of the Kubernetes API server's server-side-apply and delete endpoints.

    python3 kube_fake.py --port 0 --token TOKEN    # prints READY <port>; 127.0.0.1 only

It is not a cluster: nothing is scheduled, validated or defaulted. It stores what is applied
and records every request, so a test can show exactly what agent-army sends.

API (the subset agent-army uses, shaped as the real server answers):
  PATCH  /api/v1/...{name} and /apis/{group}/{version}/...{name}
         needs Content-Type application/apply-patch+yaml and ?fieldManager=; answers the object
         with metadata.managedFields naming the manager (415 / 400 otherwise). A StatefulSet
         gets what its controller would make: pod `{name}-0` (Running, ready) and one volume
         claim per claim template, `{claim}-{name}-0`, with the template's labels.
  GET    an object (404 with a Status when absent), or a collection with
         ?labelSelector=k=v,k2=v2: a List of the matching objects (items without kind)
  DELETE one object: removes it (a namespace takes everything in it); a StatefulSet with
         ?propagationPolicy=Foreground is only marked, and goes with its pod (never its claims)
         after two more GETs of it, as a real one goes once its pod has stopped; a collection
         with ?labelSelector=: the matching ones
  GET    /api/v1/namespaces/{ns}/pods/{pod}/log?container=&tailLines=&timestamps=: the lines
         set for the container (text/plain)
  GET    /api/v1/namespaces/{ns}/pods/{pod}/exec?container=&command=... with a WebSocket
         upgrade (subprotocol v4.channel.k8s.io): answers the output set for the pod and the
         command's verb (`status`, `netcheck`, `devices list`, `devices approve`) on
         channel 1, stderr on 2, then the Status on channel 3
Auth: `Authorization: Bearer TOKEN`, else 401 with a Status.

Control (not part of the API):
  GET  /__fake/requests  -> [{"method","path","query","content_type","authorization","body"}]
  GET  /__fake/objects   -> {path: object}
  GET  /__fake/violations -> a Secret deleted while its agent's StatefulSet was still stopping
  POST /__fake/reset     clears the recorded requests
  POST /__fake/exec      {"pod", "verb", "stdout", "code"}: what an exec of that verb prints
  POST /__fake/pod       {"pod", "phase", "ready", "waiting"}: a pod's status
  POST /__fake/object    {"path", "object"}: an object someone else made
  POST /__fake/log       {"pod", "container", "lines"}: a container's log
"""
import base64
import hashlib
import argparse
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
REQUESTS = []
OBJECTS = {}
EXEC = {}
LOGS = {}
STOPPING = {}
VIOLATIONS = []
TOKEN = ""
PLURALS = {"namespaces", "secrets", "configmaps", "services", "statefulsets",
           "networkpolicies", "persistentvolumeclaims", "pods"}
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def pod_of(namespace, sts):
    """The pod (and claims) a StatefulSet's controller would make."""
    name = sts["metadata"]["name"]
    template = sts["spec"]["template"]
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{name}-0", "namespace": namespace,
                     "labels": dict(template["metadata"].get("labels") or {})},
        "spec": template["spec"],
        "status": {
            "phase": "Running",
            "podIP": "10.42.0.7",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": c["name"], "ready": True, "restartCount": 0,
                 "state": {"running": {"startedAt": "2026-11-30T00:00:00Z"}}}
                for c in template["spec"]["containers"]],
        },
    }
    claims = {}
    for t in sts["spec"].get("volumeClaimTemplates") or []:
        claim = f"{t['metadata']['name']}-{name}-0"
        claims[f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}"] = {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace,
                         "labels": dict(t["metadata"].get("labels") or {})},
            "spec": t["spec"], "status": {"phase": "Bound"},
        }
    return f"/api/v1/namespaces/{namespace}/pods/{name}-0", pod, claims


def status(code, reason, message):
    return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                  "reason": reason, "message": message, "code": code}


def matches(obj, selector):
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def send(self, code, doc):
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if url.path.startswith("/__fake/"):
            return self.control(url.path, raw)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with LOCK:
            REQUESTS.append({
                "method": self.command,
                "path": url.path,
                "query": query,
                "content_type": self.headers.get("Content-Type"),
                "authorization": self.headers.get("Authorization"),
                "body": body,
            })
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.send(*status(401, "Unauthorized", "Unauthorized"))
        if self.command == "PATCH":
            return self.apply(url.path, query, body)
        if self.command == "DELETE":
            return self.delete(url.path, query)
        if self.command == "GET" and url.path.endswith("/log"):
            return self.log(url.path, query)
        if self.command == "GET" and url.path.endswith("/exec"):
            return self.exec(url.path, url.query)
        if self.command == "GET":
            return self.get(url.path, query)
        return self.send(*status(405, "MethodNotAllowed", f"{self.command} is not faked"))

    def apply(self, path, query, body):
        if self.headers.get("Content-Type") != "application/apply-patch+yaml":
            return self.send(*status(415, "UnsupportedMediaType",
                                     f"the body of type {self.headers.get('Content-Type')} is not supported"))
        manager = query.get("fieldManager")
        if not manager:
            return self.send(*status(400, "BadRequest",
                                     "PATCH, application/apply-patch+yaml: fieldManager is required"))
        if not isinstance(body, dict) or path.rsplit("/", 1)[-1] != body.get("metadata", {}).get("name"):
            return self.send(*status(400, "BadRequest", "the name of the object does not match the URL"))
        obj = json.loads(json.dumps(body))
        meta = obj.setdefault("metadata", {})
        with LOCK:
            previous = OBJECTS.get(path)
            owners = {f.get("manager") for f in (previous or {}).get("metadata", {}).get("managedFields") or []}
            if previous is not None and query.get("force") != "true" and owners != {manager}:
                # As the real server: fields another manager owns conflict unless forced.
                return self.send(*status(409, "Conflict",
                                         f"Apply failed with conflicts: conflicts with \"{', '.join(sorted(owners)) or 'before-first-apply'}\""))
            generation = (previous or {}).get("metadata", {}).get("generation", 0)
            meta["uid"] = (previous or {}).get("metadata", {}).get("uid", f"uid-{len(OBJECTS) + 1}")
            meta["generation"] = generation + 1
            meta["managedFields"] = [{"manager": manager, "operation": "Apply",
                                      "apiVersion": obj.get("apiVersion"), "fieldsType": "FieldsV1"}]
            OBJECTS[path] = obj
            if obj.get("kind") == "StatefulSet":
                pod_path, pod, claims = pod_of(meta.get("namespace"), obj)
                OBJECTS[pod_path] = pod
                for p, c in claims.items():
                    OBJECTS.setdefault(p, c)
        self.send(200 if previous else 201, obj)

    def get(self, path, query):
        selector = query.get("labelSelector")
        with LOCK:
            if path in STOPPING:
                STOPPING[path] -= 1
                if STOPPING[path] < 0:
                    del STOPPING[path]
                    ns = path.split("/")[5]
                    OBJECTS.pop(path, None)
                    OBJECTS.pop(f"/api/v1/namespaces/{ns}/pods/{path.rsplit('/', 1)[-1]}-0", None)
            if path in OBJECTS and selector is None:
                return self.send(200, OBJECTS[path])
            items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
                     for p, o in sorted(OBJECTS.items())
                     if p.rsplit("/", 1)[0] == path and matches(o, selector or "")]
        if not items and path.rsplit("/", 1)[-1] not in PLURALS:
            return self.send(*status(404, "NotFound", f"{path} not found"))
        self.send(200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                        "items": items})

    def log(self, path, query):
        pod_path = path.rsplit("/", 1)[0]
        pod = pod_path.rsplit("/", 1)[-1]
        with LOCK:
            exists = pod_path in OBJECTS
            lines = list(LOGS.get((pod, query.get("container", "")), []))
        if not exists:
            return self.send(*status(404, "NotFound", f'pods "{pod}" not found'))
        tail = int(query.get("tailLines", "0") or 0)
        if tail:
            lines = lines[-tail:]
        if query.get("timestamps") == "true":
            lines = [f"2026-11-30T04:00:{i:02d}.000000000Z {l}" for i, l in enumerate(lines)]
        body = "".join(l + "\n" for l in lines).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def exec(self, path, raw_query):
        query = urllib.parse.parse_qs(raw_query)
        pod = path.split("/")[-2]
        command = query.get("command", [])
        line = " ".join(command)
        verb = next((v for v in ("devices list", "devices approve", "status", "netcheck")
                     if v in line), "")
        if self.headers.get("Upgrade", "").lower() != "websocket":
            return self.send(*status(400, "BadRequest", "exec needs a WebSocket upgrade"))
        with LOCK:
            pod_path = path.rsplit("/", 1)[0]
            exists = pod_path in OBJECTS
            out = EXEC.get((pod, verb))
        if not exists:
            return self.send(*status(404, "NotFound", f'pods "{pod}" not found'))
        protocols = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if "v4.channel.k8s.io" not in protocols:
            return self.send(*status(400, "BadRequest", "no supported subprotocol"))
        accept = base64.b64encode(hashlib.sha1(
            (self.headers["Sec-WebSocket-Key"] + WS_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
        self.end_headers()
        if out is None:
            out = {"stdout": "", "stderr": f"{verb}: not set in the fake\n", "code": 1}
        frames = []
        if out.get("stdout"):
            frames.append(b"\x01" + out["stdout"].encode())
        if out.get("stderr"):
            frames.append(b"\x02" + out["stderr"].encode())
        code = out.get("code", 0)
        if code == 0:
            st = {"metadata": {}, "status": "Success"}
        else:
            st = {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                  "message": f"command terminated with non-zero exit code: exit code {code}",
                  "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
        frames.append(b"\x03" + json.dumps(st).encode())
        for f in frames:
            self.wfile.write(ws_frame(0x2, f))
        self.wfile.write(ws_frame(0x8, (1000).to_bytes(2, "big")))
        self.wfile.flush()
        self.close_connection = True

    def delete(self, path, query):
        selector = query.get("labelSelector")
        with LOCK:
            if selector is None:
                if path not in OBJECTS:
                    return self.send(*status(404, "NotFound", f"{path} not found"))
                # A namespace takes everything in it along.
                inside = "/namespaces/" + path.rsplit("/", 1)[-1] + "/"
                is_namespace = path.startswith("/api/v1/namespaces/") and path.count("/") == 4
                gone = [p for p in OBJECTS if p == path or (is_namespace and inside in p)]
                if "/statefulsets/" in path and query.get("propagationPolicy") == "Foreground":
                    # As the real server: marked, and gone only once its pod has stopped (here:
                    # after two more reads of it).
                    obj = OBJECTS[path]
                    obj["metadata"]["deletionTimestamp"] = "2026-11-30T04:00:00Z"
                    obj["metadata"]["finalizers"] = ["foregroundDeletion"]
                    STOPPING[path] = 2
                    return self.send(200, obj)
                if "/secrets/" in path:
                    ns = path.split("/")[4]
                    agent = (OBJECTS[path]["metadata"].get("labels") or {}).get("agent-army/agent")
                    for p in STOPPING:
                        if p.split("/")[5] == ns and (OBJECTS.get(p, {}).get("metadata", {}).get("labels") or {}).get("agent-army/agent") == agent:
                            VIOLATIONS.append(f"{path} deleted while {p} was still stopping")
            else:
                gone = [p for p, o in OBJECTS.items()
                        if p.rsplit("/", 1)[0] == path and matches(o, selector)]
            items = [OBJECTS.pop(p) for p in gone if p in OBJECTS]
        if selector is None:
            return self.send(200, items[0])
        self.send(200, {"kind": "List", "apiVersion": "v1", "items": items})

    def control(self, path, raw):
        with LOCK:
            if path == "/__fake/requests":
                return self.send(200, REQUESTS)
            if path == "/__fake/violations":
                return self.send(200, VIOLATIONS)
            if path == "/__fake/objects":
                return self.send(200, OBJECTS)
            if path == "/__fake/reset":
                REQUESTS.clear()
                return self.send(200, {})
        if path in ("/__fake/exec", "/__fake/pod", "/__fake/object", "/__fake/log"):
            doc = json.loads(raw or b"{}")
            with LOCK:
                if path == "/__fake/log":
                    LOGS[(doc["pod"], doc["container"])] = doc["lines"]
                    return self.send(200, {})
                if path == "/__fake/object":
                    OBJECTS[doc["path"]] = doc["object"]
                    return self.send(200, {})
                if path == "/__fake/exec":
                    EXEC[(doc["pod"], doc["verb"])] = doc
                    return self.send(200, {})
                for p, o in OBJECTS.items():
                    if o.get("kind") == "Pod" and o["metadata"]["name"] == doc["pod"]:
                        st = o["status"]
                        st["phase"] = doc.get("phase", st["phase"])
                        ready = doc.get("ready", True)
                        st["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
                        for c in st["containerStatuses"]:
                            c["ready"] = ready
                            if doc.get("waiting") and c["name"] == doc.get("container", "openclaw"):
                                c["state"] = {"waiting": {"reason": doc["waiting"]}}
                                c["restartCount"] = 5
                        return self.send(200, o)
            return self.send(404, {})
        self.send(404, {})

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = handle_any


def ws_frame(opcode, payload):
    """One unmasked WebSocket frame, as a server sends it."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
    return head + payload


def main():
    global TOKEN
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token", required=True)
    args = ap.parse_args()
    TOKEN = args.token
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"READY {server.server_address[1]}", flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
