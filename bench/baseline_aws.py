#!/usr/bin/env python3
"""SDK baseline for bench/fleet: the fleet agent-army deploys on AWS, written plainly with boto3.

    python3 baseline_aws.py --endpoint URL --agents N [--threads 10] [--poll-ms 200]

What it does, as agent-army does for a new stack (src/provider/aws/):
  1. the newest Canonical Ubuntu 24.04 amd64 AMI (DescribeImages) and the default VPC
     (DescribeVpcs), one after the other;
  2. a security group with no inbound rule, tagged (CreateSecurityGroup);
  3. on a pool of --threads threads, for each agent: RunInstances with the same shape as
     agent-army's (user data of a similar size, instance and volume tags, IMDSv2 required,
     hop limit 1, a gp3 encrypted root volume, a client token), then DescribeInstances of
     that instance every --poll-ms until it is running.
It reads nothing back before creating (a fresh account), keeps no state, and retries nothing
beyond botocore's defaults. Prints one JSON line: {"agents", "instances", "seconds"}.
"""
import argparse
import json
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

CANONICAL = "099720109477"
NOBLE = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"


def tags(kind, stack, name, agent=None):
    t = [{"Key": "agent-army:project", "Value": "bench"}, {"Key": "agent-army:stack", "Value": stack},
         {"Key": "agent-army:role", "Value": kind}, {"Key": "Name", "Value": name}]
    if agent:
        t.append({"Key": "agent-army:agent", "Value": agent})
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--agents", type=int, required=True)
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--poll-ms", type=int, default=200)
    ap.add_argument("--stack", default="sdk")
    ap.add_argument("--user-data-bytes", type=int, default=12000)
    args = ap.parse_args()
    t0 = time.monotonic()
    ec2 = boto3.client("ec2", region_name="eu-central-1", endpoint_url=args.endpoint,
                       config=Config(max_pool_connections=args.threads + 2))
    images = ec2.describe_images(Owners=[CANONICAL], Filters=[
        {"Name": "name", "Values": [NOBLE]}, {"Name": "architecture", "Values": ["x86_64"]},
        {"Name": "state", "Values": ["available"]}])["Images"]
    image = max(images, key=lambda i: i["CreationDate"])
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    name = f"agent-army-bench-{args.stack}"
    sg = ec2.create_security_group(
        GroupName=name, Description="no inbound access", VpcId=vpc,
        TagSpecifications=[{"ResourceType": "security-group",
                            "Tags": tags("network", args.stack, name)}])["GroupId"]

    def one(i):
        agent = f"a{i:04d}"
        host = f"{args.stack}-{agent}"
        user_data = "#cloud-config\n# " + host + "\n" + "#" * args.user_data_bytes + "\n"
        r = ec2.run_instances(
            ImageId=image["ImageId"], InstanceType="t3.medium", MinCount=1, MaxCount=1,
            ClientToken=uuid.uuid4().hex, UserData=user_data, SecurityGroupIds=[sg],
            MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled",
                             "HttpPutResponseHopLimit": 1},
            BlockDeviceMappings=[{"DeviceName": image.get("RootDeviceName", "/dev/sda1"),
                                  "Ebs": {"VolumeSize": 30, "VolumeType": "gp3",
                                          "DeleteOnTermination": True, "Encrypted": True}}],
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags("server", args.stack, host, agent)},
                               {"ResourceType": "volume", "Tags": tags("server", args.stack, host, agent)}])
        iid = r["Instances"][0]["InstanceId"]
        while True:
            d = ec2.describe_instances(InstanceIds=[iid])
            if d["Reservations"][0]["Instances"][0]["State"]["Name"] == "running":
                return iid
            time.sleep(args.poll_ms / 1000)

    with ThreadPoolExecutor(args.threads) as pool:
        ids = list(pool.map(one, range(1, args.agents + 1)))
    print(json.dumps({"agents": args.agents, "instances": len(set(ids)),
                      "seconds": round(time.monotonic() - t0, 3)}))
    return 0 if len(set(ids)) == args.agents else 1


if __name__ == "__main__":
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    sys.exit(main())
