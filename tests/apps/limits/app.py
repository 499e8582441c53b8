"""Web side of tests/limits.rs. `/` answers the worker's pid; `/stuck` marks that it began (the
file LIMITS_STUCK) and sleeps for a minute, for `harakiri`; `/grow` keeps 128 MiB in a global,
for `reload-on-rss`; `/mule-stuck` sends mule 1 the message that makes it sleep."""

import os
import time

import uwsgi

hoard = []


def stuck_in_sleep():
    with open(os.environ["LIMITS_STUCK"], "w") as mark:
        mark.write(str(os.getpid()))
    time.sleep(60)


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/stuck":
        stuck_in_sleep()
    elif path == "/grow":
        # Written, so every page is resident.
        hoard.append(b"\x01" * (128 << 20))
    elif path == "/mule-stuck":
        uwsgi.mule_msg(b"stuck", 1)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
