"""A job handler written like Galaxy 26's `galaxy-main` (galaxy/main/__init__.py), to run as a
mule: it parses its command line with argparse, installs handlers for SIGTERM, SIGINT and
SIGHUP that set an Event, and waits for it on its main thread with a timeout (Galaxy's "a
timeout is required or the signals won't be handled").

It appends one JSON line to $HANDLER_RECORD as it starts (its argv, parsed arguments, mule id,
what `os.environ` and the process environment say of HANDLER_ROLE and IS_WEBAPP, whether it
runs on the main thread, whether the web app's module is loaded in it), one per signal, and
one as it stops. Run as `python -m job_handler` or through its console script,
`zerg-test-handler` (the dist-info beside it).

With HANDLER_IMPORT_SECS set, it first spends that long before installing its handlers, as
Galaxy's handler does importing Galaxy, and records "importing" as that begins."""

import argparse
import ctypes
import json
import os
import signal
import sys
import threading
import time

import uwsgi

exit = threading.Event()
libc = ctypes.CDLL(None)
libc.getenv.restype = ctypes.c_char_p


def record(event, **fields):
    line = json.dumps({"event": event, "mule": uwsgi.mule_id(), "pid": os.getpid(), **fields})
    fd = os.open(os.environ["HANDLER_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (line + "\n").encode())
    os.close(fd)


def process_env(name):
    value = libc.getenv(name.encode())
    return value.decode() if value is not None else None


def handle_signal(signum, frame):
    record("signal", signal=signal.Signals(signum).name)
    exit.set()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-c", "--config-file")
    parser.add_argument("--server-name")
    parser.add_argument("--attach-to-pool", action="append")
    args = parser.parse_args()
    importing = float(os.environ.get("HANDLER_IMPORT_SECS", "0"))
    if importing:
        record("importing")
        time.sleep(importing)
    for name in ("TERM", "INT", "HUP"):
        signal.signal(getattr(signal, f"SIG{name}"), handle_signal)
    record(
        "start",
        argv=sys.argv,
        args=vars(args),
        environ={k: os.environ.get(k) for k in ("HANDLER_ROLE", "IS_WEBAPP")},
        process={k: process_env(k) for k in ("HANDLER_ROLE", "IS_WEBAPP")},
        main_thread=threading.current_thread() is threading.main_thread(),
        web_app_loaded="zerg_wsgi_file" in sys.modules,
    )
    while not exit.wait(20):
        pass
    record("stop")


if __name__ == "__main__":
    main()
