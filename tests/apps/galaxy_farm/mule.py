"""A job-handler mule written the way Galaxy 22.01's is (galaxy/main.py, and the uWSGI farm
transport of galaxy/web_stack/transport.py), run unchanged under zerg:

- a dispatcher thread that takes `uwsgi.lock(0)`, blocks in `uwsgi.farm_get_msg()` and leaves
  on `__SHUTDOWN__`;
- a main thread that waits, and on SIGTERM, SIGINT or SIGHUP sends `__SHUTDOWN__` (a str, as
  Galaxy sends every message) so that the dispatcher returns, then joins it.

Each job it takes is recorded with its mule id and pid, and so are its start and stop."""

import os
import signal
import threading

import uwsgi

SHUTDOWN_MSG = "__SHUTDOWN__"
RECORD = os.environ["FARM_RECORD"]


def append(line):
    fd = os.open(RECORD, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line.encode())
    os.close(fd)


def unicodify(msg):
    return msg.decode() if isinstance(msg, bytes) else msg


class Transport:
    def __init__(self):
        self.running = True
        self.thread = threading.Thread(name="dispatcher_thread", target=self.dispatch)

    def dispatch(self):
        while self.running:
            uwsgi.lock(0)
            try:
                msg = unicodify(uwsgi.farm_get_msg())
                if msg == SHUTDOWN_MSG:
                    self.running = False
                else:
                    append(f"job {uwsgi.mule_id()} {os.getpid()} {msg}\n")
            finally:
                uwsgi.unlock(0)

    def shutdown(self):
        # Galaxy: wake the dispatcher, which may be blocked in farm_get_msg().
        if self.running:
            uwsgi.mule_msg(SHUTDOWN_MSG, uwsgi.mule_id())
            uwsgi.farm_msg("jobs", SHUTDOWN_MSG)
        self.thread.join()


exit_requested = threading.Event()


def on_signal(signum, frame):
    exit_requested.set()


for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, on_signal)

transport = Transport()
transport.thread.start()
append(f"start {uwsgi.mule_id()} {os.getpid()}\n")
while not exit_requested.is_set():
    exit_requested.wait(1)
transport.shutdown()
append(f"stop {uwsgi.mule_id()} {os.getpid()}\n")
