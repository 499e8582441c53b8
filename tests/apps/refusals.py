"""Routes for tests/http_refusals.rs: what reaches the app once the server has refused what
HTTP/1.1 says to refuse, and an app that answers without reading its request body."""

import json
import os

# wsgi.input objects kept past their response, as a traceback or a reference cycle keeps them
# until the collector runs (Flask's abort() under httpbin does this).
_kept = []
# What /read-record's last call made of its body.
_last = []


def _send(start_response, body, status="200 OK"):
    body = body.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _seen(environ):
    return {
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ.get("QUERY_STRING", ""),
        "headers": {k: v for k, v in environ.items() if k.startswith(("HTTP_", "CONTENT_"))},
    }


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/pid":
        return _send(start_response, str(os.getpid()))
    if path == "/unread":
        # Answers without reading the body, and keeps wsgi.input alive.
        _kept.append(environ["wsgi.input"])
        del _kept[:-8]
        return _send(start_response, "not read", "501 Not Implemented")
    if path == "/read":
        seen = _seen(environ)
        seen["length"] = len(environ["wsgi.input"].read())
        return _send(start_response, json.dumps(seen))
    if path == "/read-record":
        # What the app made of its body, for /last to tell: its length, or the error.
        if environ.get("QUERY_STRING") == "late":
            # Reads once the client may have gone.
            import time

            time.sleep(0.5)
        try:
            _last[:] = [str(len(environ["wsgi.input"].read()))]
        except OSError as e:
            _last[:] = [type(e).__name__]
        return _send(start_response, _last[0])
    if path == "/reset":
        _last.clear()
        return _send(start_response, "reset")
    if path == "/last":
        return _send(start_response, _last[0] if _last else "nothing yet")
    if path == "/read-swallow":
        # An app that catches the read's error and answers 200: the client still gets 400.
        try:
            environ["wsgi.input"].read()
        except OSError as e:
            return _send(start_response, "swallowed " + type(e).__name__)
        return _send(start_response, "read")
    return _send(start_response, json.dumps(_seen(environ)))
