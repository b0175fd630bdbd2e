#!/usr/bin/env python3
"""A reverse proxy that behaves like `tailscale serve --https=443 http://127.0.0.1:PORT`, for
agent-army's tests of the real OpenClaw gateway.

    python3 serve_proxy.py --port 0 --upstream-port 18789 --client-ip 100.101.102.103 \
        --host dev-agent-pm.tail12345.ts.net

What `tailscale serve` does, and so does this: it connects to the backend from 127.0.0.1, keeps
the Host header the client sent (the node's MagicDNS name), and adds X-Forwarded-For (the tailnet
client's address), X-Forwarded-Host and X-Forwarded-Proto: https. Plain HTTP on the front (TLS is
not what is being tested); WebSocket upgrades are passed through byte for byte.
Prints `READY <port>` once listening on 127.0.0.1. Python 3.11 standard library only.
"""
import argparse
import select
import socket
import sys
import threading

CLIENT_IP = "100.64.0.1"
HOST = ""
UPSTREAM = 0


def read_head(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        buf += chunk
        if len(buf) > 1 << 20:
            return None, b""
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def pump(a, b):
    socks = [a, b]
    try:
        while True:
            r, _, _ = select.select(socks, [], [], 300)
            if not r:
                return
            for s in r:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)
    except OSError:
        return


def handle(client):
    try:
        head, rest = read_head(client)
        if head is None:
            return
        lines = head.decode("latin-1").split("\r\n")
        request_line, headers = lines[0], lines[1:]
        kept = []
        host = HOST
        upgrade = any(h.split(":", 1)[0].strip().lower() == "upgrade" for h in headers)
        for h in headers:
            name = h.split(":", 1)[0].strip().lower()
            if name in ("x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "forwarded", "x-real-ip"):
                continue  # the proxy sets these itself, as tailscale serve does
            if name == "connection" and not upgrade:
                continue  # one request per connection, so every request gets its own headers
            if name == "host":
                host = HOST or h.split(":", 1)[1].strip()
                continue
            kept.append(h)
        kept = [f"Host: {host}"] + kept + [
            f"X-Forwarded-For: {CLIENT_IP}",
            f"X-Forwarded-Host: {host}",
            "X-Forwarded-Proto: https",
        ] + ([] if upgrade else ["Connection: close"])
        upstream = socket.create_connection(("127.0.0.1", UPSTREAM), source_address=("127.0.0.1", 0))
        upstream.sendall(("\r\n".join([request_line] + kept) + "\r\n\r\n").encode("latin-1") + rest)
        pump(client, upstream)
        upstream.close()
    except OSError:
        pass
    finally:
        client.close()


def main():
    global CLIENT_IP, HOST, UPSTREAM
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--upstream-port", type=int, required=True)
    ap.add_argument("--client-ip", default=CLIENT_IP)
    ap.add_argument("--host", default="")
    a = ap.parse_args()
    CLIENT_IP, HOST, UPSTREAM = a.client_ip, a.host, a.upstream_port
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", a.port))
    srv.listen(64)
    print(f"READY {srv.getsockname()[1]}", flush=True)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
