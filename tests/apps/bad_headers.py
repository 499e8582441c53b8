"""Sends a status or a header with CR, LF or NUL in it, chosen by PATH_INFO; the server must
send none of them (tests/app_headers.rs). Every injected line carries the word "pwned"."""

import sys

INJECT = "\r\nSet-Cookie: pwned=1"

BAD = {
    "/value-crlf": ("200 OK", [("X-Evil", "a" + INJECT)]),
    "/value-lf": ("200 OK", [("X-Evil", "a\nSet-Cookie: pwned=1")]),
    "/value-cr": ("200 OK", [("X-Evil", "a\rpwned")]),
    "/value-nul": ("200 OK", [("X-Evil", "a\0pwned")]),
    "/name-crlf": ("200 OK", [("X-Evil" + INJECT, "1")]),
    "/name-lf": ("200 OK", [("X-Evil\npwned", "1")]),
    "/name-nul": ("200 OK", [("X-Evil\0pwned", "1")]),
    # The headers the server checks apart, or keeps values of.
    "/content-type-crlf": ("200 OK", [("Content-Type", "text/plain" + INJECT)]),
    "/cache-control-nul": ("200 OK", [("Cache-Control", "no-cache\0pwned")]),
    "/content-length-crlf": ("200 OK", [("Content-Length", "2" + INJECT)]),
    "/location-lf": ("302 Found", [("Location", "/x\nSet-Cookie: pwned=1")]),
    "/set-cookie-cr": ("200 OK", [("Set-Cookie", "a=1\rpwned")]),
    "/status-crlf": ("200 OK" + INJECT, []),
    "/status-lf": ("200 OK\npwned", []),
    "/status-nul": ("200 O\0Kpwned", []),
    "/status-trailing-crlf": ("200 OK\r\n", []),
    "/status-code-crlf": ("200\r\npwned", []),
}


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/ok":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    if path == "/exc-info-crlf":
        # A good head replaced, before it went out, by one with a bad header.
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise RuntimeError("changed my mind")
        except RuntimeError:
            start_response("503 Service Unavailable", [("X-Evil", "a" + INJECT)], sys.exc_info())
        return [b"pwned"]
    if path == "/write-crlf":
        write = start_response("200 OK", [("X-Evil", "a" + INJECT)])
        write(b"pwned")
        return []
    status, headers = BAD[path]
    start_response(status, headers + [("Content-Type", "text/plain")])
    return [b"pwned body"]
