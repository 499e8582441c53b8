"""Answers with `uwsgi.opt` as JSON, saying what type each value has: the test checks that a
uWSGI config reaches the app the way uWSGI shows it (bytes values, lists for repeated keys,
`True` for a flag given without a value)."""

import json
import sys

import uwsgi

print("uwsgi_opt app imported", file=sys.stderr, flush=True)


def describe(value):
    if isinstance(value, bytes):
        return {"bytes": value.decode("utf-8", "replace")}
    if isinstance(value, list):
        return [describe(v) for v in value]
    if value is True:
        return True
    return {"other": repr(value)}


def application(environ, start_response):
    body = json.dumps({key: describe(value) for key, value in uwsgi.opt.items()}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
