#!/usr/bin/env python3
"""HTTP throughput and latency of zerg next to gunicorn, uWSGI and granian, in one run.

    python3 benches/throughput.py [--rounds 3] [--duration 5] [--connections 64]

Installs the peers (and Flask's httpbin) in benches/.venv with pip, builds zerg in release
mode, installs wrk (and nginx, the static-file ceiling) from Debian's packages if they are
missing, then loads every server with `wrk -t2 -cN` on 127.0.0.1. Each server runs the same
app with 2 worker processes:

  hello    a WSGI hello world (benches/apps/hello.py); the ceiling is a bare hyper server
           answering the same bytes from Rust, shaped like a zerg worker (hyper_ceiling),
           also run with 1 and 2 us of busy work per request (hyper+1us, hyper+2us): what
           a microsecond of work costs a server here, so what a ratio to the ceiling means
  paced    hello, each connection waiting 2 ms between a response and its next request:
           latency at one offered load that every fast server carries (~25k req/s here).
           At saturation, with wrk on the same two cores, p99 mostly measures how often the
           server and wrk preempt each other, which grows with the server's speed
  get      Flask httpbin's /get (benches/apps/mixed.py)
  big      a 1 MiB response
  upload   a 1 MiB POST body read whole from wsgi.input (zerg with a 1 MiB post-buffering,
           so the body arrives before the app is called, as granian always does; uWSGI's
           --post-buffering made it slower here, so it streams)
  static   a 64 KiB file through each server's static-file mapping (zerg `static-map`,
           uWSGI `--static-map`, granian `--static-path-mount`; gunicorn has none); the
           ceiling is nginx serving the same file
  memory   PSS of each worker process after the app (Flask + httpbin) is imported
  metrics  hello on zerg with its `metrics` and `stats` endpoints on, scraped once a second
           during the load as Prometheus would (zerg-metrics), beside zerg without them:
           what observing costs (`--scenarios metrics` runs only this)

ASGI, against granian (--interface asgi), uvicorn (--workers 2, httptools, uvloop) and gunicorn
with uvicorn's worker (uvicorn-worker; the way Galaxy runs), every server on uvloop (zerg's
`loop: auto` finds it in the venv):

  asgi-hello   a raw ASGI hello world (benches/apps/asgi_hello.py)
  asgi-paced   the same, 2 ms between a response and the next request: p99 at one load
  starlette    Starlette's plain-text hello (benches/apps/asgi_starlette.py)
  fastapi      FastAPI's /items/5?q=x, JSON with a validated path and query (asgi_fastapi.py)
  asgi-big     a 1 MiB response streamed in 64 KiB `more_body` chunks (asgi_mixed.py)
  asgi-upload  a 1 MiB POST body read whole through receive() (zerg with a 1 MiB
               post-buffering, as for WSGI)

`--scenarios wsgi` or `--scenarios asgi` runs one family (about half the time each).

Servers run in a rotated order each round, so drift on a busy machine touches them alike;
the hello servers are all started at once and take turns, so that one round measures them
tens of seconds apart, not minutes, and the hello ceiling runs right beside zerg (after it in
even rounds, before it in odd ones). The table shows the median over rounds and each server's ratio to zerg.
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from common import (APPS, ROOT, VENV, free_port, machine, parse_wrk, process_tree, setup, sh,
                    venv_bin, zerg_bin)

WORKERS = 2
PEERS = {"gunicorn": "gunicorn", "granian": "granian", "uwsgi": "uwsgi>=2.0,<2.1",
         "httpbin": "httpbin", "flask": "flask", "uvicorn": "uvicorn", "httptools": "httptools",
         "uvloop": "uvloop", "uvicorn_worker": "uvicorn-worker", "starlette": "starlette",
         "fastapi": "fastapi"}
SCENARIOS = {
    # name: (app, path, wrk lua script or None)
    "hello": ("hello", "/", None),
    "paced": ("hello", "/", "paced.lua"),
    "get": ("mixed", "/get", None),
    "big": ("mixed", "/big", None),
    "upload": ("mixed", "/upload", "upload.lua"),
    "static": ("mixed", "/static/file.bin", None),
    "metrics": ("hello", "/", None),
    "asgi-hello": ("asgi_hello", "/", None),
    "asgi-paced": ("asgi_hello", "/", "paced.lua"),
    "starlette": ("asgi_starlette", "/", None),
    "fastapi": ("asgi_fastapi", "/items/5?q=x", None),
    "asgi-big": ("asgi_mixed", "/big", None),
    "asgi-upload": ("asgi_mixed", "/upload", "upload.lua"),
}
ASGI_APPS = {"asgi_hello", "asgi_starlette", "asgi_fastapi", "asgi_mixed"}
SERVERS = ["zerg", "granian", "uwsgi", "gunicorn", "uvicorn", "gunicorn-uvicorn"]
# Servers of one interface only.
WSGI_ONLY = {"uwsgi", "gunicorn"}
ASGI_ONLY = {"uvicorn", "gunicorn-uvicorn"}
# Ceilings: what the scenario costs without Python at all.
CEILING = {"hello": "hyper", "paced": "hyper", "static": "nginx"}
# zerg with its metrics and stats endpoints on, measured right beside zerg in `metrics`.
OBSERVED = "zerg-metrics"
# Seconds between two scrapes of the observed zerg during a measurement (Prometheus' default
# is a minute; a second is the most a figure can change, so the most a scrape can cost).
SCRAPE_EVERY = 1.0
# The metrics port of each observed zerg, by its HTTP port.
METRICS_PORTS = {}
# The hello ceiling again, each request spinning this many ns before its answer: how steeply
# the ceiling falls with work per request on this machine (with wrk sharing its cores, a
# microsecond costs a bare server far more than a microsecond's share of its req/s).
CALIBRATION = {"hyper+1us": 1000, "hyper+2us": 2000}


def debian(*tools):
    missing = [t for t in tools if not shutil.which(t) and not os.path.exists(f"/usr/sbin/{t}")]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"benches/throughput.py needs {' '.join(missing)}: apt-get install {' '.join(missing)}")
    sh("apt-get", "install", "-y", "-q", *missing)


def command(server, app, port, tmp, static_dir):
    """argv (and environment additions) that start `server` on `port` with `app`."""
    asgi = app in ASGI_APPS
    if server in ("zerg", OBSERVED):
        cfg = os.path.join(tmp, f"{server}.yml")
        callable_ = "app\ninterface: asgi" if asgi else "application"
        observe = ""
        if server == OBSERVED:
            METRICS_PORTS[port] = free_port()
            observe = (f"metrics: 127.0.0.1:{METRICS_PORTS[port]}\n"
                       f"stats: {tmp}/{server}-stats.sock\n")
        with open(cfg, "w") as f:
            f.write(f"zerg-server: {tmp}/{server}.sock\nhttp: 127.0.0.1:{port}\n"
                    f"module: {app}:{callable_}\npythonpath: {APPS}\nvirtualenv: {VENV}\n"
                    f"processes: {WORKERS}\nstatic-map: /static={static_dir}\nlisten: 1024\n"
                    f"post-buffering: {1 << 20}\n{observe}")
        return [zerg_bin("zerg-pool"), "--config", cfg], {"ZERG_LOG": "warn"}
    if server == "granian" and asgi:
        return [venv_bin("granian"), "--interface", "asgi", "--workers", str(WORKERS),
                "--loop", "uvloop", "--host", "127.0.0.1", "--port", str(port),
                "--working-dir", APPS, "--backlog", "1024", "--log-level", "warning",
                f"{app}:app"], {}
    if server == "uvicorn":
        return [venv_bin("uvicorn"), "--workers", str(WORKERS), "--http", "httptools",
                "--loop", "uvloop", "--host", "127.0.0.1", "--port", str(port),
                "--app-dir", APPS, "--backlog", "1024", "--no-access-log",
                "--log-level", "warning", f"{app}:app"], {}
    if server == "gunicorn-uvicorn":
        return [venv_bin("gunicorn"), "-w", str(WORKERS), "-k", "uvicorn_worker.UvicornWorker",
                "-b", f"127.0.0.1:{port}", "--chdir", APPS, "--backlog", "1024",
                "--log-level", "warning", f"{app}:app"], {}
    if server == "granian":
        # One app thread per worker, as zerg's default `threads: 1`. Granian's default for
        # WSGI is backpressure/2 = 256 threads per worker: the same req/s here, a worse p99.
        return [venv_bin("granian"), "--interface", "wsgi", "--workers", str(WORKERS),
                "--blocking-threads", "1",
                "--host", "127.0.0.1", "--port", str(port), "--working-dir", APPS,
                "--static-path-route", "/static", "--static-path-mount", static_dir,
                "--log-level", "warning", f"{app}:application"], {}
    if server == "uwsgi":
        # --http-socket closes the connection after each response; with --http11-socket's
        # keep-alive, 2 sync workers would serve 2 of the 64 connections and starve the rest.
        return [venv_bin("uwsgi"), "--master", "--http-socket", f"127.0.0.1:{port}",
                "--module", f"{app}:application", "--pythonpath", APPS, "--virtualenv", VENV,
                "--processes", str(WORKERS), "--disable-logging", "--listen", "1024",
                "--static-map", f"/static={static_dir}", "--die-on-term"], {}
    if server == "gunicorn":
        return [venv_bin("gunicorn"), "-w", str(WORKERS), "--threads", "4",
                "-b", f"127.0.0.1:{port}", "--chdir", APPS, "--backlog", "1024",
                "--log-level", "warning", f"{app}:application"], {}
    if server == "hyper" or server in CALIBRATION:
        return [zerg_bin("examples/hyper_ceiling"), f"127.0.0.1:{port}", str(WORKERS),
                str(CALIBRATION.get(server, 0))], {}
    if server == "nginx":
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"worker_processes {WORKERS};\ndaemon off;\npid {tmp}/nginx.pid;\n"
                    f"error_log {tmp}/nginx.err warn;\nevents {{ worker_connections 1024; }}\n"
                    f"http {{ access_log off; sendfile on; tcp_nopush on;\n"
                    f"  client_body_temp_path {tmp}; proxy_temp_path {tmp};\n"
                    f"  fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n"
                    f"  server {{ listen 127.0.0.1:{port} backlog=1024;\n"
                    f"    location /static/ {{ alias {static_dir}/; }} }} }}\n")
        return [shutil.which("nginx") or "/usr/sbin/nginx", "-c", conf, "-p", tmp], {}
    raise ValueError(server)


def start(server, app, tmp, static_dir, probe):
    port = free_port()
    argv, env = command(server, app, port, tmp, static_dir)
    log = open(os.path.join(tmp, f"{server}.log"), "w")
    proc = subprocess.Popen(argv, cwd=APPS, env=dict(os.environ, **env), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    proc.port = port
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{server} exited at start; see {log.name}")
        try:
            # Every worker up: a few answers in a row.
            for _ in range(4 * WORKERS + 1):
                answer(f"http://127.0.0.1:{port}{probe}")
            return proc, port
        except OSError:
            time.sleep(0.1)
    stop(proc)
    sys.exit(f"{server} did not answer {probe} within 120 s; see {log.name}")


def answer(url):
    """Asks `url`; an HTTP error status is an answer too (the probe of an upload-only app)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            r.read()
    except urllib.error.HTTPError:
        pass


def stop(*procs):
    """Stops each server's whole process group: all are told first, then waited for."""
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory(proc):
    """(average PSS of the worker processes, PSS of the whole server) in MiB. Workers are the
    processes without children (the serving leaves of every server's process tree)."""
    t = process_tree(proc.pid)
    leaves = [p for p, kids in t.items() if not kids and p != proc.pid]
    workers = [pss_kib(p) for p in leaves] or [0]
    return statistics.mean(workers) / 1024, sum(pss_kib(p) for p in t) / 1024


def wrk(port, path, script, duration, connections, tmp):
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    if script:
        argv += ["-s", os.path.join(tmp, script)]
    out = subprocess.run(argv + [f"http://127.0.0.1:{port}{path}"], capture_output=True,
                         text=True, timeout=duration + 60).stdout
    # A read error is the server closing a connection wrk meant to reuse: what uWSGI's
    # --http-socket does after every response (its sync workers would hold a keep-alive client
    # each). wrk opens a new connection and goes on, so those are not failed requests.
    return parse_wrk(out, socket_errors=("connect", "write", "timeout"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds of load per measurement")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--servers", default=",".join(SERVERS))
    args = ap.parse_args()
    groups = {"wsgi": [s for s in SCENARIOS if SCENARIOS[s][0] not in ASGI_APPS],
              "asgi": [s for s in SCENARIOS if SCENARIOS[s][0] in ASGI_APPS]}
    scenarios = [x for s in args.scenarios.split(",") if s for x in groups.get(s, [s])]
    servers = [s for s in args.servers.split(",") if s]
    if "zerg" not in servers:
        sys.exit("zerg must be among --servers: every ratio is to zerg")

    # zerg alone on hello (`--scenarios metrics --servers zerg`) needs no peer installed.
    alone = set(servers) == {"zerg"} and all(SCENARIOS[s][0] == "hello" for s in scenarios)
    setup({} if alone else PEERS)
    sh("cargo", "build", "-q", "--release", "-p", "zergling", "--example", "hyper_ceiling", cwd=ROOT)
    debian("wrk", "nginx")

    tmp = tempfile.mkdtemp(prefix="zerg-http-bench-")
    os.chmod(tmp, 0o755)  # nginx's workers run as another user
    static_dir = os.path.join(tmp, "static")
    os.makedirs(static_dir)
    with open(os.path.join(static_dir, "file.bin"), "wb") as f:
        f.write(os.urandom(64 << 10))
    with open(os.path.join(tmp, "upload.lua"), "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = string.rep("u", 1048576)\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"\n')
    with open(os.path.join(tmp, "paced.lua"), "w") as f:
        f.write("function delay()\n  return 2\nend\n")  # ms between a response and the next request

    results = {}  # (scenario, server) -> [wrk result]
    mem = {}  # server -> [(worker MiB, total MiB)]
    # The ceilings (and the hello ceiling's calibrations) take their turn in the rotation like
    # the others.
    everyone = servers + [c for c in ("hyper", "nginx") if any(CEILING.get(s) == c for s in scenarios)]
    if "hello" in scenarios and "hyper" in everyone:
        everyone += list(CALIBRATION)
    if "metrics" in scenarios:
        everyone.append(OBSERVED)
    for r in range(args.rounds):
        order = everyone[r % len(everyone):] + everyone[: r % len(everyone)]
        for app in dict.fromkeys(SCENARIOS[s][0] for s in scenarios):
            todo = {server: [s for s in scenarios if SCENARIOS[s][0] == app and measured_in(s, server, servers)]
                    for server in order}
            todo = {server: t for server, t in todo.items() if t}
            if not todo:
                continue
            if app == "hello":
                # Every hello server is started at once and they take turns, scenario by
                # scenario: zerg and its ceiling are then measured tens of seconds apart, not
                # minutes (an idle server only waits). The app is tiny; no memory is read here.
                procs = {}
                try:
                    for server in todo:
                        procs[server] = start(server, app, tmp, static_dir, "/")[0]
                    for s in scenarios:
                        for server in beside_zerg(list(todo), s, r):
                            if s in todo[server]:
                                measure(results, r, s, server, procs[server].port, args, tmp)
                finally:
                    stop(*procs.values())
                continue
            # One at a time: PSS splits the pages shared between processes (libpython's), so
            # a server's memory is read with no other server running.
            for server, t in todo.items():
                # A GET the app answers (not an upload).
                probe = next((SCENARIOS[s][1] for s in t if SCENARIOS[s][2] is None), "/get")
                proc, port = start(server, app, tmp, static_dir, probe)
                try:
                    if server in servers and app == "mixed":
                        mem.setdefault(server, []).append(memory(proc))
                    for s in t:
                        measure(results, r, s, server, port, args, tmp)
                finally:
                    stop(proc)
    shutil.rmtree(tmp, ignore_errors=True)
    report(results, mem, scenarios, servers, args)


def beside_zerg(order, scenario, r):
    """`order`, with the scenario's ceiling moved next to zerg: right after it in even rounds,
    right before it in odd ones. zerg's ratio to its ceiling is then read from two runs a few
    seconds apart, where the rotation alone could put them half a minute apart, and this
    machine's speed drifts by a tenth within a minute."""
    ceiling = OBSERVED if scenario == "metrics" else CEILING.get(scenario)
    if "zerg" not in order or ceiling not in order:
        return order
    order = [s for s in order if s != ceiling]
    at = order.index("zerg") + (1 if r % 2 == 0 else 0)
    return order[:at] + [ceiling] + order[at:]


def measured_in(scenario, server, servers):
    """Whether `server` is measured in `scenario`."""
    if server in CALIBRATION:
        return scenario == "hello"
    if server == OBSERVED or scenario == "metrics":
        return server in (OBSERVED, "zerg") and scenario == "metrics"
    if server in servers:
        asgi = SCENARIOS[scenario][0] in ASGI_APPS
        if (server in WSGI_ONLY and asgi) or (server in ASGI_ONLY and not asgi):
            return False
        return not (server == "gunicorn" and scenario == "static")
    return CEILING.get(scenario) == server


def measure(results, r, s, server, port, args, tmp):
    _, path, script = SCENARIOS[s]
    wrk(port, path, script, 1, args.connections, tmp)  # warm-up
    scraping = threading.Event()
    if server == OBSERVED:
        scraping.set()
        threading.Thread(target=scrape, args=(port, tmp, scraping), daemon=True).start()
    try:
        res = wrk(port, path, script, args.duration, args.connections, tmp)
    finally:
        scraping.clear()
    results.setdefault((s, server), []).append(res)
    print(f"round {r + 1} {s:7} {server:9} {res['rps']:>10.0f} req/s "
          f"p50 {res['p50']:.2f} ms p99 {res['p99']:.2f} ms errors {res['errors']}",
          file=sys.stderr)


def scrape(port, tmp, scraping):
    """While `scraping` is set: the metrics and the stats of the observed zerg at `port`, each
    once every SCRAPE_EVERY seconds, read whole, as a Prometheus server and uwsgitop would."""
    while scraping.is_set():
        answer(f"http://127.0.0.1:{METRICS_PORTS[port]}/metrics")
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(os.path.join(tmp, f"{OBSERVED}-stats.sock"))
            while s.recv(65536):
                pass
        time.sleep(SCRAPE_EVERY)


def report(results, mem, scenarios, servers, args):
    print(f"\nwrk -t2 -c{args.connections}, {args.duration} s per run, median of {args.rounds} "
          f"rounds, {WORKERS} workers each; {machine()}")
    print(f"{'scenario':9} {'server':15} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'vs zerg':>8}")
    for s in scenarios:
        base = None
        rows = []
        for server in servers + ["hyper", *CALIBRATION, "nginx", OBSERVED]:
            runs = results.get((s, server))
            if not runs:
                continue
            med = {k: statistics.median(x[k] for x in runs) for k in ("rps", "p50", "p99")}
            errors = sum(x["errors"] for x in runs)
            if server == "zerg":
                base = med["rps"]
            rows.append((server, med, errors))
        for server, med, errors in rows:
            ratio = f"{med['rps'] / base:.2f}x" if base else "-"
            label = server + (" (ceiling)" if CEILING.get(s) == server else "")
            print(f"{s:9} {label:15} {med['rps']:>9.0f} {med['p50']:>8.2f} {med['p99']:>8.2f} "
                  f"{errors:>7} {ratio:>8}")
    # Each round runs a scenario's servers minutes apart at most, so the ratio within a round
    # is the fairest view on a machine whose speed drifts between rounds.
    for s in scenarios:
        ceiling = CEILING.get(s)
        ours, theirs = results.get((s, "zerg")), results.get((s, ceiling))
        if ours and theirs:
            ratios = [z["rps"] / c["rps"] for z, c in zip(ours, theirs)]
            print(f"{s}: zerg / {ceiling} ceiling by round: "
                  f"{' '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f})")
    # The ASGI goals are set against granian: zerg's ratio to it, round by round.
    for s in scenarios:
        ours, theirs = results.get((s, "zerg")), results.get((s, "granian"))
        if SCENARIOS[s][0] in ASGI_APPS and ours and theirs:
            ratios = [z["rps"] / g["rps"] for z, g in zip(ours, theirs)]
            p99 = [(z["p99"], g["p99"]) for z, g in zip(ours, theirs)]
            print(f"{s}: zerg / granian by round: {' '.join(f'{x:.2f}' for x in ratios)} "
                  f"(median {statistics.median(ratios):.2f}); p99 ms zerg/granian: "
                  f"{' '.join(f'{a:.1f}/{b:.1f}' for a, b in p99)}")
    ours, observed = results.get(("metrics", "zerg")), results.get(("metrics", OBSERVED))
    if ours and observed:
        ratios = [o["rps"] / z["rps"] for o, z in zip(observed, ours)]
        print(f"metrics: zerg with metrics and stats scraped / zerg without, by round: "
              f"{' '.join(f'{x:.3f}' for x in ratios)} (median {statistics.median(ratios):.3f})")
    bare = results.get(("hello", "hyper"))
    for server, ns in CALIBRATION.items():
        worked = results.get(("hello", server))
        if bare and worked:
            ratios = [w["rps"] / b["rps"] for w, b in zip(worked, bare)]
            print(f"hello: the ceiling with {ns / 1000:g} us of work per request / the ceiling by "
                  f"round: {' '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f})")
    if mem:
        print(f"\nmemory after importing Flask + httpbin (PSS, MiB, median of {args.rounds} rounds)")
        print(f"{'server':9} {'per worker':>11} {'all processes':>14}")
        for server in servers:
            if server in mem:
                w = statistics.median(m[0] for m in mem[server])
                t = statistics.median(m[1] for m in mem[server])
                print(f"{server:9} {w:>11.1f} {t:>14.1f}")


if __name__ == "__main__":
    main()
