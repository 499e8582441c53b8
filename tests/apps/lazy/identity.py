"""Answers what Galaxy 26 names a web process after (galaxy/web_stack: `main.N` from
`GUNICORN_WORKER_ID`): that variable as the app saw it while it was imported, then the
worker id zerg gives it (`uwsgi.worker_id()`)."""

import os

import uwsgi

AT_IMPORT = os.environ.get("GUNICORN_WORKER_ID")


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{AT_IMPORT} {uwsgi.worker_id()}".encode()]
