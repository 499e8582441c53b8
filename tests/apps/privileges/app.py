"""Answers with the ids of the process that serves the request (tests/privileges.rs: the app
runs as the configured `uid`/`gid`, never as root)."""

import json
import os

print("privileges app imported", flush=True)


def application(environ, start_response):
    body = json.dumps(
        {
            "pid": os.getpid(),
            "uid": os.getuid(),
            "euid": os.geteuid(),
            "gid": os.getgid(),
            "egid": os.getegid(),
            "groups": sorted(os.getgroups()),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
