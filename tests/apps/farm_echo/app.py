"""Web side of tests/fuzz_farm.rs: the body of POST /farm goes to farm `echo` as one message,
that of POST /mule to mule 1 itself. A refusal is the answer's status: 413 too large, 503 the
queue is full."""

import uwsgi


def application(environ, start_response):
    body = environ["wsgi.input"].read()
    try:
        if environ["PATH_INFO"] == "/farm":
            uwsgi.farm_msg("echo", body)
        else:
            uwsgi.mule_msg(body, 1)
        status, answer = "200 OK", b"sent"
    except ValueError as e:
        status, answer = "413 Content Too Large", str(e).encode()
    except OSError as e:
        status, answer = "503 Service Unavailable", str(e).encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(answer)))])
    return [answer]
