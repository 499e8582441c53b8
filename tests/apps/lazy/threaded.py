"""A WSGI app that, like Galaxy, starts a thread while it is built and answers from what that
thread does: each request hands its question to the thread and waits for the answer.

Imported in a master that then forks (no `lazy-apps`), a worker has no such thread: its
requests wait, and answer 503 after `THREADED_WAIT` seconds (default 5) instead of hanging.
Imported in each worker (`lazy-apps: true`), the thread is there, and the answer says so:
`built=PID pid=PID thread=answerer` with the same pid twice. `THREADED_FAIL` set makes the
import raise it, as an app whose database is down would."""

import os
import queue
import threading

if os.environ.get("THREADED_FAIL"):
    raise RuntimeError(os.environ["THREADED_FAIL"])

BUILT_IN = os.getpid()
WAIT = float(os.environ.get("THREADED_WAIT", "5"))
questions = queue.Queue()


def answer_questions():
    while True:
        reply = questions.get()
        reply.put(f"built={BUILT_IN} pid={os.getpid()} thread={threading.current_thread().name}")


threading.Thread(target=answer_questions, name="answerer", daemon=True).start()


def application(environ, start_response):
    reply = queue.Queue(1)
    questions.put(reply)
    try:
        body, status = reply.get(timeout=WAIT), "200 OK"
    except queue.Empty:
        body = f"no thread answered: built={BUILT_IN} pid={os.getpid()}"
        status = "503 Service Unavailable"
    start_response(status, [("Content-Type", "text/plain")])
    return [body.encode()]
