"""A job handler mule: takes jobs from its farm and records each with its mule id. It also
records when it starts and stops (CLOCK_MONOTONIC, comparable across processes), so a test can
check that no two processes ever hold the same mule position at once."""

import os
import time

import uwsgi


def append(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line.encode())
    os.close(fd)


record = os.environ["FARM_RECORD"]
lives = os.environ.get("FARM_LIVES")
assert uwsgi.in_farm("jobs"), "this mule is in the jobs farm"
if lives:
    append(lives, f"start {uwsgi.mule_id()} {os.getpid()} {time.monotonic_ns()}\n")
try:
    while True:
        job = uwsgi.farm_get_msg().decode()
        hold = os.environ.get("FARM_HOLD")
        if job == "hold" and hold and not os.path.exists(hold):
            # The first mule to take this job announces itself and hangs (the test kills it).
            append(hold, f"{os.getpid()}\n")
            time.sleep(60)
        append(record, f"{uwsgi.mule_id()} {os.getpid()} {job}\n")
finally:
    if lives:
        append(lives, f"stop {uwsgi.mule_id()} {os.getpid()} {time.monotonic_ns()}\n")
