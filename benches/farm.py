#!/usr/bin/env python3
"""farm_msg -> mule throughput and end-to-end latency: zerg next to uWSGI 2.0, same app and
mule script, measured in the same run, alternating servers.

    python3 benches/farm.py [--bursts 20] [--per-request 200] [--rounds 2]

Installs uWSGI with pip in benches/.venv and builds zerg in release mode. Everything listens on
127.0.0.1 only. Prints messages received (uWSGI drops what does not fit its queue), messages/s
from first to last receive, p50/p99 latency from farm_msg to the mule, and ratios to zerg.
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request

from common import APPS, free_port, machine, setup, venv_bin, zerg_bin

APP = os.path.join(APPS, "farm_app.py")
MULE = os.path.join(APPS, "farm_mule.py")


def get(port, path, timeout=60):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.read().decode()


def wait_up(port, proc, log, deadline=60):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("server exited at start:\n" + open(log).read()[-3000:])
        try:
            get(port, "/ping", timeout=2)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not answer")


def start(server, port, out, tmp, log):
    env = dict(os.environ, FARM_BENCH_OUT=out, PYTHONPATH=APPS)
    if server == "zerg":
        cfg = os.path.join(tmp, "zerg.yml")
        with open(cfg, "w") as f:
            f.write(
                f"zerg-server: {tmp}/zerg.sock\nhttp: 127.0.0.1:{port}\nwsgi-file: {APP}\n"
                f"processes: 2\nmule: [{MULE}, {MULE}]\nfarm: jobs:1,2\nenv: FARM_BENCH_OUT={out}\n"
            )
        cmd = [zerg_bin("zerg-pool"), "--config", cfg]
        env["ZERG_LOG"] = "warn"
    else:
        cmd = [venv_bin("uwsgi"), "--master", "--http-socket", f"127.0.0.1:{port}",
               "--wsgi-file", APP, "--processes", "2", f"--mule={MULE}", f"--mule={MULE}",
               "--farm", "jobs:1,2", "--disable-logging", "--env", f"FARM_BENCH_OUT={out}"]
    logf = open(log, "w")
    return subprocess.Popen(cmd, env=env, stdout=logf, stderr=logf, start_new_session=True)


def run_one(server, bursts, per_request):
    tmp = tempfile.mkdtemp(prefix=f"farm-{server}-")
    out = os.path.join(tmp, "stats")
    port = free_port()
    log = os.path.join(tmp, "server.log")
    proc = start(server, port, out, tmp, log)
    try:
        wait_up(port, proc, log)
        time.sleep(1)  # mules start after the web side answers
        sent = failed = 0
        for _ in range(bursts):
            s, f = map(int, get(port, f"/send?n={per_request}").split())
            sent, failed = sent + s, failed + f
        get(port, "/stop")
        end = time.monotonic() + 60
        files = [f"{out}.1", f"{out}.2"]
        while time.monotonic() < end and not all(os.path.exists(p) and os.path.getsize(p) > 0 for p in files):
            time.sleep(0.1)
        time.sleep(0.2)
        count, first, last, lat = 0, None, 0, []
        for p in files:
            if not os.path.exists(p):
                continue
            head, _, rest = open(p).read().partition("\n")
            n, f0, l0 = map(int, head.split())
            count += n
            if n:
                first = f0 if first is None else min(first, f0)
                last = max(last, l0)
            lat += [int(x) for x in rest.split()]
        span = (last - first) / 1e9 if first else 0
        lat.sort()
        pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6 if lat else float("nan")
        return dict(server=server, queued=sent, refused=failed, received=count,
                    rate=count / span if span else 0, p50=pct(0.5), p99=pct(0.99))
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bursts", type=int, default=20)
    ap.add_argument("--per-request", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    setup({"uwsgi": "uwsgi>=2.0,<2.1"})
    results = {"zerg": [], "uwsgi": []}
    for r in range(args.rounds):
        order = ["zerg", "uwsgi"] if r % 2 == 0 else ["uwsgi", "zerg"]
        for server in order:
            results[server].append(run_one(server, args.bursts, args.per_request))
    print(f"\nfarm_msg -> mule, {args.bursts} x {args.per_request} messages, 2 workers, 2 mules; {machine()}")
    print(f"{'server':8} {'sent':>7} {'refused':>8} {'received':>9} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'msg/s vs zerg':>14}")
    med = {s: {k: statistics.median(x[k] for x in v) for k in ("queued", "refused", "received", "rate", "p50", "p99")}
           for s, v in results.items()}
    for s in ("zerg", "uwsgi"):
        m = med[s]
        ratio = m["rate"] / med["zerg"]["rate"] if med["zerg"]["rate"] else float("nan")
        print(f"{s:8} {m['queued']:7.0f} {m['refused']:8.0f} {m['received']:9.0f} {m['rate']:9.0f} "
              f"{m['p50']:8.2f} {m['p99']:8.2f} {ratio:14.2f}")


if __name__ == "__main__":
    main()
