"""Web side of the farm tests: each request queues one job for the `jobs` farm."""

import uwsgi


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/job/"):
        uwsgi.farm_msg("jobs", path[len("/job/"):].encode())
        body = b"queued"
    elif path == "/too-large":
        try:
            uwsgi.farm_msg("jobs", b"x" * 70000)
            body = b"sent"
        except ValueError as e:
            body = str(e).encode()
    elif path == "/unknown-farm":
        try:
            uwsgi.farm_msg("nope", b"x")
            body = b"sent"
        except ValueError as e:
            body = str(e).encode()
    elif path == "/ids":
        body = f"worker={uwsgi.worker_id()} mule={uwsgi.mule_id()} numproc={uwsgi.numproc} farm={uwsgi.in_farm()}".encode()
    elif path == "/opt":
        body = repr(sorted((k, v) for k, v in uwsgi.opt.items() if k in ("mule", "processes"))).encode()
    else:
        body = b"?"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
