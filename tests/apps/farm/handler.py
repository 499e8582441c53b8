"""A job handler mule: takes jobs from its farm and records each with its mule id."""

import os

import uwsgi

record = os.environ["FARM_RECORD"]
assert uwsgi.in_farm("jobs"), "this mule is in the jobs farm"
while True:
    job = uwsgi.farm_get_msg()
    line = f"{uwsgi.mule_id()} {os.getpid()} {job.decode()}\n".encode()
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line)
    os.close(fd)
