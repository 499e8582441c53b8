"""The benchmark's second app, identical for every server: Flask's httpbin for `/get`, plus a
1 MiB response at `/big` and a 1 MiB upload at `/upload` (read whole from wsgi.input). Static
files under `/static/` are served by each server's own static-file support, not by this app."""

from httpbin import app as httpbin

BIG = b"x" * (1 << 20)


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(BIG)))])
        return [BIG]
    if path == "/upload":
        data = environ["wsgi.input"].read()
        body = str(len(data)).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    return httpbin(environ, start_response)
