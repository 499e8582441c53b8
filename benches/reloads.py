#!/usr/bin/env python3
"""Reloads under load: zerg next to gunicorn and granian, same hello app, 2 workers each,
measured in the same run.

    python3 benches/reloads.py [--reloads 5] [--conns 32] [--gap 2.0]

Installs gunicorn and granian with pip in benches/.venv and builds zerg in release mode. Each
server gets the same load: `--conns` keep-alive connections on 127.0.0.1 from a thread each,
reconnecting when the server says `Connection: close`, never retrying a failed request. While
the load runs it is reloaded `--reloads` times, `--gap` seconds apart: zerg with
`zergctl reload`, gunicorn and granian with SIGHUP to their master. A reload window is the
`--gap` seconds that follow each reload signal. Prints failed requests, requests per second
overall and in the windows, p99 latency in the windows, and ratios to zerg.
"""

import argparse
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

from common import APPS, free_port, machine, setup, venv_bin, zerg_bin


def start(server, port, tmp):
    if server == "zerg":
        cfg = os.path.join(tmp, "zerg.yml")
        with open(cfg, "w") as f:
            f.write(f"zerg-server: {tmp}/zerg.sock\nhttp: 127.0.0.1:{port}\n"
                    f"wsgi-file: {APPS}/hello.py\nprocesses: 2\n")
        cmd = [zerg_bin("zerg-pool"), "--config", cfg]
    elif server == "gunicorn":
        cmd = [venv_bin("gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}", "--chdir", APPS, "hello:application"]
    else:
        cmd = [venv_bin("granian"), "--interface", "wsgi", "--workers", "2", "--host", "127.0.0.1",
               "--port", str(port), "--working-dir", APPS, "hello:application"]
    log = open(os.path.join(tmp, "server.log"), "w")
    env = dict(os.environ, ZERG_LOG="warn")
    return subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)


def reload(server, proc, tmp):
    if server == "zerg":
        subprocess.run([zerg_bin("zergctl"), "--pool",
                        f"{tmp}/zerg.sock", "reload"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        os.kill(proc.pid, signal.SIGHUP)


class Conn:
    """A keep-alive connection and the bytes read past the last response."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        self.sock.close()


def request(conn, port):
    """One GET on the connection (opened if None). Returns (conn or None, ok)."""
    if conn is None:
        conn = Conn(port)
    conn.sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    data = conn.buf
    while b"\r\n\r\n" not in data:
        chunk = conn.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lower = head.lower()
    length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0]) if b"content-length:" in lower else 0
    while len(rest) < length:
        chunk = conn.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    conn.buf = rest[length:]
    ok = head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200")
    if b"connection: close" in lower:
        conn.close()
        return None, ok
    return conn, ok


def load(port, stop, records):
    conn = None
    for _ in range(10_000_000):
        if stop.is_set():
            break
        t0 = time.monotonic()
        try:
            conn, ok = request(conn, port)
        except OSError:
            ok = False
            if conn is not None:
                conn.close()
            conn = None
        records.append((t0, time.monotonic() - t0, ok))


def run_one(server, args):
    tmp = tempfile.mkdtemp(prefix=f"reload-{server}-")
    port = free_port()
    proc = start(server, port, tmp)
    try:
        end = time.monotonic() + 60
        while True:
            try:
                conn, ok = request(None, port)
                if ok:
                    break
            except OSError:
                pass
            if time.monotonic() > end or proc.poll() is not None:
                raise RuntimeError(f"{server} did not start: " + open(os.path.join(tmp, "server.log")).read()[-2000:])
            time.sleep(0.1)
        stop = threading.Event()
        records = [[] for _ in range(args.conns)]
        threads = [threading.Thread(target=load, args=(port, stop, r)) for r in records]
        for t in threads:
            t.start()
        time.sleep(args.gap)
        windows = []
        for _ in range(args.reloads):
            t = time.monotonic()
            reload(server, proc, tmp)
            windows.append((t, t + args.gap))
            time.sleep(max(0.0, t + args.gap - time.monotonic()))
        start_all, end_all = windows[0][0] - args.gap, time.monotonic()
        stop.set()
        for t in threads:
            t.join()
        rows = [r for rs in records for r in rs]
        in_win = [r for r in rows if any(a <= r[0] < b for a, b in windows)]
        lat = sorted(r[1] for r in in_win if r[2])
        p99 = lat[int(0.99 * (len(lat) - 1))] * 1000 if lat else float("nan")
        return dict(server=server, total=len(rows), failed=sum(1 for r in rows if not r[2]),
                    rps=len(rows) / (end_all - start_all),
                    win_rps=len(in_win) / (args.gap * args.reloads), p99=p99)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reloads", type=int, default=5)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--gap", type=float, default=2.0)
    args = ap.parse_args()
    setup({"gunicorn": "gunicorn", "granian": "granian"})
    results = {}
    for server in ("zerg", "gunicorn", "granian"):
        results[server] = run_one(server, args)
    print(f"\n{args.reloads} reloads under {args.conns} keep-alive connections, hello world, 2 workers; {machine()}")
    print(f"{'server':9} {'requests':>9} {'failed':>7} {'req/s':>8} {'req/s in reloads':>17} {'p99 ms in reloads':>18} {'req/s vs zerg':>14}")
    z = results["zerg"]
    for s, r in results.items():
        print(f"{s:9} {r['total']:9d} {r['failed']:7d} {r['rps']:8.0f} {r['win_rps']:17.0f} {r['p99']:18.1f} {r['rps'] / z['rps']:14.2f}")


if __name__ == "__main__":
    main()
