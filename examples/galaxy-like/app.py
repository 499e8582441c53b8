"""A small app that dispatches jobs the way Galaxy does with uWSGI mules.

The web request inserts a job row with no handler and notifies the `job-handlers` farm with
`uwsgi.farm_msg`; the mule that takes the message assigns itself (only if nobody has) and runs
the job. Connections are per process and per thread, opened after the fork (Galaxy uses a
scoped SQLAlchemy session the same way); `post_fork_hook` drops any inherited from the master.
"""

import json
import os
import sqlite3
import threading

import uwsgi

DB = os.environ.get("GALAXY_LIKE_DB", "galaxy-like.sqlite")
_local = threading.local()


def connect():
    conn = sqlite3.connect(DB, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS job (id INTEGER PRIMARY KEY, tool TEXT, handler TEXT, state TEXT)"
    )
    return conn


def db():
    if getattr(_local, "pid", None) != os.getpid():
        _local.conn, _local.pid = connect(), os.getpid()
    return _local.conn


def _forget_inherited():
    _local.__dict__.clear()


uwsgi.post_fork_hook = _forget_inherited
connect().close()  # create the schema once, in the master


def application(environ, start_response):
    if environ["REQUEST_METHOD"] == "POST" and environ["PATH_INFO"] == "/api/jobs":
        tool = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)).decode() or "cat1"
        cur = db().execute("INSERT INTO job (tool, handler, state) VALUES (?, NULL, 'new')", (tool,))
        job_id = cur.lastrowid
        uwsgi.farm_msg("job-handlers", str(job_id).encode())
        body = json.dumps({"id": job_id, "state": "new"}).encode()
        start_response("201 Created", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    if environ["PATH_INFO"] == "/api/jobs":
        rows = db().execute("SELECT id, handler, state FROM job ORDER BY id").fetchall()
        body = json.dumps([{"id": i, "handler": h, "state": s} for i, h, s in rows]).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    body = b"galaxy-like: POST /api/jobs to queue a job, GET /api/jobs to list them\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
