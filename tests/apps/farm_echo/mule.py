"""Mule side of tests/fuzz_farm.rs: appends every message it takes, from its farm or its own
queue, to FARM_ECHO_RECORD as a 4-byte big-endian length and the bytes."""

import os
import struct

import uwsgi

fd = os.open(os.environ["FARM_ECHO_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
while True:
    msg = uwsgi.mule_get_msg()
    os.write(fd, struct.pack(">I", len(msg)) + msg)
