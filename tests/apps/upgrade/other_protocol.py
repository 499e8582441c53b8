#!/usr/bin/env python3
"""Stands in for a zerg-pool binary of another control protocol version in an upgrade: it
says hello on the channel the old pool gave it (ZERG_UPGRADE_FD) as version 99, then waits
for the old pool to hang up."""

import json
import os
import struct

fd = int(os.environ["ZERG_UPGRADE_FD"])
hello = json.dumps({"type": "takeover", "protocol": 99, "pid": os.getpid()}).encode()
os.write(fd, struct.pack(">I", len(hello)) + hello)
while os.read(fd, 4096):
    pass
