"""Answers every request with its environ as JSON, whatever the request holds. Used by
tests/fuzz_http.rs (arbitrary header bytes) and tests/fallbacks.rs (what the server reuses)."""

import json
import os


def application(environ, start_response):
    body = json.dumps(
        {
            # The same objects from one request to the next tell what the server reused.
            "pid": os.getpid(),
            "id": id(environ),
            "start_response": id(start_response),
            # Header keys in the environ's order: a reused environ keeps an earlier request's.
            "headers": [k for k in environ if k.startswith("HTTP_")],
            "environ": {k: v for k, v in environ.items() if isinstance(v, str)},
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
