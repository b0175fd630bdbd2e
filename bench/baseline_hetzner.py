#!/usr/bin/env python3
"""SDK baseline for bench/fleet: the fleet agent-army deploys on Hetzner, written plainly with hcloud.

    python3 baseline_hetzner.py --endpoint URL/v1 --agents N [--threads 10] [--poll-ms 200]

What it does, as agent-army does for a new stack (src/provider/hetzner/):
  1. a firewall with no rules and a break-glass SSH key, both labelled, one after the other;
  2. on a pool of --threads threads, for each agent: POST /servers (cx22, ubuntu-24.04, fsn1,
     labels, user data of a similar size, the SSH key, the firewall, IPv4 and IPv6), then
     waiting for the create action and its next actions with hcloud's own
     `wait_until_finished`, which polls GET /actions/{id} every --poll-ms.
It reads nothing back before creating (a fresh project) and keeps no state. Prints one JSON
line: {"agents", "servers", "seconds"}.
"""
import argparse
import base64
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from hcloud import Client
from hcloud.firewalls import Firewall
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType
from hcloud.servers import ServerCreatePublicNetwork

# A well-formed ed25519 public key whose private half no one holds.
SSH_KEY = "ssh-ed25519 " + base64.b64encode(
    b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(32))).decode() + " bench"


def labels(kind, stack, agent=None):
    lab = {"agent-army/project": "bench", "agent-army/stack": stack, "agent-army/role": kind}
    if agent:
        lab["agent-army/agent"] = agent
    return lab


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--agents", type=int, required=True)
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--poll-ms", type=int, default=200)
    ap.add_argument("--stack", default="sdk")
    ap.add_argument("--user-data-bytes", type=int, default=30000)  # agent-army sends ~31 KB
    args = ap.parse_args()
    t0 = time.monotonic()
    client = Client(token="bench-token", api_endpoint=args.endpoint,
                    poll_interval=args.poll_ms / 1000, poll_max_retries=10**6)
    fw = client.firewalls.create(name=f"agent-army-bench-{args.stack}", rules=[],
                                 labels=labels("network", args.stack)).firewall
    key = client.ssh_keys.create(name=f"agent-army-bench-{args.stack}", public_key=SSH_KEY,
                                 labels=labels("ssh-key", args.stack))

    def one(i):
        agent = f"a{i:04d}"
        host = f"{args.stack}-{agent}"
        user_data = "#cloud-config\n# " + host + "\n" + "#" * args.user_data_bytes + "\n"
        r = client.servers.create(
            name=host, server_type=ServerType(name="cx22"), image=Image(name="ubuntu-24.04"),
            location=Location(name="fsn1"), labels=labels("server", args.stack, agent),
            user_data=user_data, ssh_keys=[key], firewalls=[Firewall(id=fw.id)],
            public_net=ServerCreatePublicNetwork(enable_ipv4=True, enable_ipv6=True),
            start_after_create=True)
        for action in [r.action, *(r.next_actions or [])]:
            action.wait_until_finished()
        return r.server.id

    with ThreadPoolExecutor(args.threads) as pool:
        ids = list(pool.map(one, range(1, args.agents + 1)))
    print(json.dumps({"agents": args.agents, "servers": len(set(ids)),
                      "seconds": round(time.monotonic() - t0, 3)}))
    return 0 if len(set(ids)) == args.agents else 1


if __name__ == "__main__":
    sys.exit(main())
