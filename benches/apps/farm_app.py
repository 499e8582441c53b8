"""Farm benchmark, web side: /send?n=N queues N messages on farm `jobs`, each carrying its send
time (CLOCK_MONOTONIC ns); /stop queues one "stop" per mule. Counts messages uWSGI refused."""

import time

import uwsgi


def application(environ, start_response):
    path = environ["PATH_INFO"]
    sent = failed = 0
    if path == "/send":
        n = int(environ.get("QUERY_STRING", "n=1").split("=")[1])
        for _ in range(n):
            try:
                if uwsgi.farm_msg("jobs", str(time.monotonic_ns()).encode()) is False:
                    failed += 1
                else:
                    sent += 1
            except Exception:
                failed += 1
    elif path == "/stop":
        for _ in range(2):
            uwsgi.farm_msg("jobs", b"stop")
    body = f"{sent} {failed}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
