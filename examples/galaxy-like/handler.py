"""A Galaxy-like job handler mule (`main.job-handlers.N`): assigns itself each job it is told
about, unless another handler already did, then runs it."""

import os

import uwsgi

import app  # noqa: F401  (shares the schema and the connection helper)

conn = app.connect()
me = f"main.job-handlers.{uwsgi.mule_id()}"
while True:
    job_id = int(uwsgi.farm_get_msg())
    # Galaxy's "db-skip-locked"-like assignment: only an unassigned job is taken.
    taken = conn.execute("UPDATE job SET handler = ?, state = 'running' WHERE id = ? AND handler IS NULL", (me, job_id))
    if taken.rowcount != 1:
        continue
    conn.execute("UPDATE job SET state = 'ok' WHERE id = ?", (job_id,))
    print(f"{me} (pid {os.getpid()}) ran job {job_id}", flush=True)
