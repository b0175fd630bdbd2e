#!/usr/bin/env python3
"""Run moto_server with one upstream bug worked around.

moto 5.x parses each AMI's `creation_date` from MOTO_AMIS_PATH in place, once per region
backend, so the second region to load the list gets a datetime where it expects a string and
every EC2 call fails with a 500. We make the parser idempotent and start the stock server.
Usage is exactly moto_server's: python3 moto_server.py -H 127.0.0.1 -p PORT
"""
import datetime
import sys

import moto.ec2.models.amis as amis

_parse = amis.parse_timestamp


def _parse_once(value):
    if isinstance(value, datetime.datetime):
        return value
    return _parse(value)


amis.parse_timestamp = _parse_once

from moto.server import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
