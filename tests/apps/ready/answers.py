"""An app that answers its `VERSION`, except in the workers listed in `HANG_WORKERS`
(`1,2`), which accept every connection and never answer: a release whose app is stuck
(a lock never released, a thread it waits on that does not exist). `HANG_IMPORT` set makes
the import itself never finish; `FAIL_PATH` is answered 503."""

import os
import time

import uwsgi

if os.environ.get("HANG_IMPORT"):
    time.sleep(3600)


def application(environ, start_response):
    if str(uwsgi.worker_id()) in os.environ.get("HANG_WORKERS", "").split(","):
        time.sleep(3600)
    if environ["PATH_INFO"] == os.environ.get("FAIL_PATH"):
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"the database is down"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [os.environ.get("VERSION", "v1").encode()]
