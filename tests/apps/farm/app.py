"""Web side of the farm tests: each request queues one job for the `jobs` farm."""

import time

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
    elif path == "/locked-increment":
        # A read-modify-write that loses updates unless uwsgi.lock() excludes every process
        # and thread of the generation.
        counter = environ["QUERY_STRING"]
        uwsgi.lock()
        try:
            with open(counter) as f:
                n = int(f.read() or 0)
            time.sleep(0.001)
            with open(counter, "w") as f:
                f.write(str(n + 1))
        finally:
            uwsgi.unlock()
        body = b"ok"
    elif path == "/bad-lock":
        try:
            uwsgi.lock(5)
            body = b"locked"
        except ValueError as e:
            body = str(e).encode()
    elif path == "/zerg-typed":
        import zerg

        try:
            zerg.farm_msg("jobs", "a str, not bytes")
            body = b"accepted"
        except TypeError:
            body = f"TypeError; worker {zerg.worker_id()} of {uwsgi.numproc}".encode()
    elif path == "/ids":
        body = f"worker={uwsgi.worker_id()} mule={uwsgi.mule_id()} numproc={uwsgi.numproc} farm={uwsgi.in_farm()}".encode()
    elif path == "/opt":
        body = repr(sorted((k, v) for k, v in uwsgi.opt.items() if k in ("mule", "processes"))).encode()
    else:
        body = b"?"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
