"""Mule side of tests/limits.rs: the message `stuck` makes the first mule to take it sleep for a
minute (it marks LIMITS_STUCK first), for `mule-harakiri`; taken again once that mule is gone,
it is finished at once and recorded in LIMITS_DONE."""

import os
import time

import uwsgi


def stuck_on_message():
    with open(os.environ["LIMITS_STUCK"], "w") as mark:
        mark.write(str(os.getpid()))
    time.sleep(60)


while True:
    msg = uwsgi.mule_get_msg()
    if msg == b"stuck":
        if not os.path.exists(os.environ["LIMITS_STUCK"]):
            stuck_on_message()
        with open(os.environ["LIMITS_DONE"], "w") as done:
            done.write(str(os.getpid()))
