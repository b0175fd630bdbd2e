#!/usr/bin/env python3
"""A recording fake of the Kubernetes API server's server-side-apply and delete endpoints.

    python3 kube_fake.py --port 0 --token TOKEN    # prints READY <port>; 127.0.0.1 only

It is not a cluster: nothing is scheduled, validated or defaulted. It stores what is applied
and records every request, so a test can show exactly what agent-army sends.

API (the subset agent-army uses, shaped as the real server answers):
  PATCH  /api/v1/...{name} and /apis/{group}/{version}/...{name}
         needs Content-Type application/apply-patch+yaml and ?fieldManager=; answers the object
         with metadata.managedFields naming the manager (415 / 400 otherwise)
  DELETE a collection with ?labelSelector=k=v,k2=v2: removes the stored objects whose labels
         match; answers a List of them
  DELETE /api/v1/namespaces/{ns}: removes the namespace and everything stored in it
Auth: `Authorization: Bearer TOKEN`, else 401 with a Status.

Control (not part of the API):
  GET  /__fake/requests  -> [{"method","path","query","content_type","authorization","body"}]
  GET  /__fake/objects   -> {path: object}
  POST /__fake/reset     clears the recorded requests
"""
import argparse
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
REQUESTS = []
OBJECTS = {}
TOKEN = ""


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
            return self.control(url.path)
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
            generation = (previous or {}).get("metadata", {}).get("generation", 0)
            meta["uid"] = (previous or {}).get("metadata", {}).get("uid", f"uid-{len(OBJECTS) + 1}")
            meta["generation"] = generation + 1
            meta["managedFields"] = [{"manager": manager, "operation": "Apply",
                                      "apiVersion": obj.get("apiVersion"), "fieldsType": "FieldsV1"}]
            OBJECTS[path] = obj
        self.send(200 if previous else 201, obj)

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
            else:
                gone = [p for p, o in OBJECTS.items()
                        if p.rsplit("/", 1)[0] == path and matches(o, selector)]
            items = [OBJECTS.pop(p) for p in gone]
        self.send(200, {"kind": "List", "apiVersion": "v1", "items": items})

    def control(self, path):
        with LOCK:
            if path == "/__fake/requests":
                return self.send(200, REQUESTS)
            if path == "/__fake/objects":
                return self.send(200, OBJECTS)
            if path == "/__fake/reset":
                REQUESTS.clear()
                return self.send(200, {})
        self.send(404, {})

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = handle_any


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
