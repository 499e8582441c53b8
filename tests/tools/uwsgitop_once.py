"""Runs the real, unmodified `uwsgitop ADDRESS` once, in a pseudo-terminal (it is a curses
program with no batch mode), until its screen shows every worker pid given, then quits it
with `q` as a person would.

Usage: python uwsgitop_once.py UWSGITOP ADDRESS PID... ; exit 0 once every pid was shown and
uwsgitop quit cleanly. On failure, what it printed (its traceback, if it could not read the
stats) goes to stderr.
"""

import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
import time

DEADLINE_SECONDS = 60


def main():
    uwsgitop, address, pids = sys.argv[1], sys.argv[2], sys.argv[3:]
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm"
        os.execv(uwsgitop, [uwsgitop, address])
    # A screen wide and tall enough for every column and worker row.
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 220, 0, 0))
    screen = b""
    deadline = time.monotonic() + DEADLINE_SECONDS
    shown = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
        # Curses moves the cursor between fields; the text of each field is written whole.
        text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b" ", screen).decode("utf8", "replace")
        if "WID" in text and all(re.search(rf"\b{p}\b", text) for p in pids):
            shown = True
            break
    if shown:
        os.write(fd, b"q")
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    try:
        while True:
            more = os.read(fd, 65536)
            if not more:
                break
            screen += more
    except OSError:
        pass
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b" ", screen).decode("utf8", "replace")
    if not shown or os.waitstatus_to_exitcode(status) != 0:
        sys.stderr.write(f"uwsgitop did not show pids {pids} (status {status}):\n{text}\n")
        sys.exit(1)
    print(text)


main()
