# Answers its version; tests/pool_failover.rs rewrites VERSION and reloads.
VERSION = "v1"


def application(environ, start_response):
    body = VERSION.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
