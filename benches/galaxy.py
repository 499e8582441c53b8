#!/usr/bin/env python3
"""Galaxy 26 under zerg next to Gravity's gunicorn command, same workers and handlers, one run.

    python3 benches/galaxy.py [--reloads 10] [--duration 15] [--connections 8]

Run on demand, not in CI: Galaxy is a 1.3 GB venv and minutes of CPU per start. Installs it once
with examples/galaxy/install.sh (skipped when examples/galaxy/.venv exists), uses the release
binaries in target/release as they are (build them first: this script never builds), and wrk
(apt-get installs it when missing and root). Each server runs in its own copy of the example's
galaxy.yml, tool_conf.xml and database/ under a temp dir, on a free port:

  zerg      examples/galaxy/zerg.yml with its port, socket and paths changed: 2 web workers
            (lazy-apps), 2 handler mules running galaxy-main
  gunicorn  what Gravity runs: gunicorn 'galaxy.webapps.galaxy.fast_factory:factory()'
            -k galaxy.webapps.galaxy.workers.Worker --workers=2 --preload ..., and one
            `galaxy-main --server-name handler_N --attach-to-pool job-handlers
            --attach-to-pool workflow-schedulers` per handler (2)

Phase 1, for each server in turn: seconds from the start to the first /api/version 200; PSS of
the whole tree (smaps_rollup, web and handlers) once the handlers run and again after the load;
one pasted-text upload job end to end (a user and API key made with bootstrap_admin_api_key, a
history, POST /api/tools/fetch, poll the dataset until `ok`); `wrk -t2 -cN --latency` for
--duration seconds on /api/version and on /api/histories (the user's x-api-key). Phase 2, each
server started afresh: --reloads reloads under light load (--clients threads, each a request
then --pause seconds, /api/version and /api/histories in turn, a new connection each), a request
failing on a connection error, a timeout or a 5xx. zerg reloads with `zergctl reload` (it
waits for the outcome); gunicorn as `galaxyctl graceful` does: SIGHUP to the master (with
--preload the workers are forked again from the master's app: no new code is loaded), then
each handler stopped and started again, one at a time, the next once the new one says it
runs. --job-delay seconds into each reload an upload job is submitted; after the reload it must
reach `ok` within --job-timeout. Tables are printed as each part ends, so a cut-short run
still says what it measured.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from common import ROOT, free_port, machine, parse_wrk, process_tree, zerg_bin

EXAMPLE = os.path.join(ROOT, "examples", "galaxy")
GVENV = os.path.join(EXAMPLE, ".venv")
WORKERS = 2
HANDLERS = 2
ADMIN_KEY = "zerg-example-admin-key"  # galaxy.yml's bootstrap_admin_api_key
SERVERS = ["zerg", "gunicorn"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def gbin(name):
    return os.path.join(GVENV, "bin", name)


# ---------------------------------------------------------------- set-up


def prepare():
    """The Galaxy venv (install.sh once), gunicorn in it, wrk, and zerg's release binaries."""
    if not os.path.exists(gbin("galaxy-main")):
        subprocess.run([os.path.join(EXAMPLE, "install.sh")], check=True)
    if not os.path.exists(gbin("gunicorn")):
        pins = open(os.path.join(EXAMPLE, "constraints-26.1.2.txt")).read()
        pin = re.search(r"^gunicorn==\S+", pins, re.M)
        subprocess.run([gbin("pip"), "install", "-q", pin.group(0) if pin else "gunicorn"], check=True)
    if not shutil.which("wrk"):
        if os.geteuid() != 0:
            sys.exit("benches/galaxy.py needs wrk: apt-get install wrk")
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True)
    missing = [b for b in ("zerg-pool", "zergling", "zergctl") if not os.path.exists(zerg_bin(b))]
    if missing:
        sys.exit(f"missing {', '.join(missing)} in target/release: cargo build --release --workspace")


def workdir(tmp, server):
    """The server's own copy of the example's config and database (made once per run)."""
    d = os.path.join(tmp, server)
    if not os.path.exists(d):
        os.makedirs(d)
        for f in ("galaxy.yml", "tool_conf.xml"):
            shutil.copy(os.path.join(EXAMPLE, f), d)
        shutil.copytree(os.path.join(EXAMPLE, "database"), os.path.join(d, "database"),
                        ignore=shutil.ignore_patterns("*.log"))
    return d


# ---------------------------------------------------------------- processes


def tree(*roots):
    """The roots and all their descendants."""
    return list(process_tree(*roots))


def pss_mib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total / 1024


def kill_tree(roots, grace=30):
    """SIGTERM to every process of the trees, SIGKILL to what is left after `grace` s."""
    pids = tree(*roots)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + wait
        while time.monotonic() < end:
            pids = [p for p in pids if alive(p)]
            if not pids:
                return
            time.sleep(0.2)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Server:
    """One Galaxy deployment: `start`, `pids`, `reload`, `stop`, `handlers_running`."""

    def __init__(self, name, tmp, phase):
        self.name = name
        self.phase = phase
        self.dir = workdir(tmp, name)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, GALAXY_CONFIG_FILE=os.path.join(self.dir, "galaxy.yml"),
                        VIRTUAL_ENV=GVENV, PATH=os.path.join(GVENV, "bin") + ":" + os.environ["PATH"])
        self.env.pop("IS_WEBAPP", None)
        self.logs = {}  # path -> None: an ordered set

    def spawn(self, argv, logname, env=None):
        # One set of logs per phase: a restarted handler appends to its position's log.
        path = os.path.join(self.dir, f"{self.phase}-{logname}")
        self.logs[path] = None
        out = open(path, "a")
        return subprocess.Popen(argv, cwd=self.dir, env=env or self.env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def handlers_running(self):
        """How many handler start-ups the logs report (each says so once)."""
        n = 0
        for path in self.logs:
            try:
                text = open(path, errors="replace").read()
            except OSError:
                continue
            n += len(re.findall(r"Galaxy server instance 'handler_\d+' is running", text))
        return n


class Zerg(Server):
    def start(self):
        self.cfg = os.path.join(self.dir, "zerg.yml")
        lines = []
        for line in open(os.path.join(EXAMPLE, "zerg.yml")):
            key = line.split(":", 1)[0]
            line = {"zerg-server": f"zerg-server: {self.dir}/zerg.sock\n",
                    "http": f"http: 127.0.0.1:{self.port}\n",
                    "chdir": f"chdir: {self.dir}\n",
                    "virtualenv": f"virtualenv: {GVENV}\n"}.get(key, line)
            lines.append(line)
        with open(self.cfg, "w") as f:
            f.writelines(lines)
        self.proc = self.spawn([zerg_bin("zerg-pool"), "--config", self.cfg], "zerg.log",
                               env=dict(os.environ, ZERG_LOG="info"))

    def pids(self):
        return tree(self.proc.pid)

    def reload(self):
        r = subprocess.run([zerg_bin("zergctl"), "--config", self.cfg, "reload"],
                           capture_output=True, text=True, timeout=1200)
        return r.returncode == 0, (r.stdout + r.stderr).strip().replace("\n", " | ")[-300:]

    def stop(self):
        t = time.monotonic()
        subprocess.run([zerg_bin("zergctl"), "--config", self.cfg, "--timeout", "60", "stop"],
                       capture_output=True, timeout=90)
        try:
            self.proc.wait(timeout=120)
            log(f"zerg: stopped {time.monotonic() - t:.1f} s after zergctl stop")
        except subprocess.TimeoutExpired:
            log(f"zerg: still running 120 s after zergctl stop: {self.pids()}; killing it")
            kill_tree([self.proc.pid], grace=10)
            self.proc.wait()


class Gunicorn(Server):
    def start(self):
        self.proc = self.spawn(
            [gbin("gunicorn"), "galaxy.webapps.galaxy.fast_factory:factory()", "--timeout", "300",
             "--pythonpath", "lib", "-k", "galaxy.webapps.galaxy.workers.Worker",
             "-b", f"127.0.0.1:{self.port}", f"--workers={WORKERS}",
             "--config", "python:galaxy.web_stack.gunicorn_config", "--no-control-socket", "--preload"],
            "gunicorn.log")
        self.handlers = [self.start_handler(n) for n in range(1, HANDLERS + 1)]

    def start_handler(self, n):
        return self.spawn([gbin("galaxy-main"), "-c", "galaxy.yml", "--server-name", f"handler_{n}",
                           "--attach-to-pool", "job-handlers", "--attach-to-pool", "workflow-schedulers"],
                          f"handler_{n}.log")

    def pids(self):
        return tree(self.proc.pid, *(h.pid for h in self.handlers))

    def reload(self):
        """`galaxyctl graceful`: HUP to gunicorn, then each handler stopped and started again."""
        old = set(children_map().get(self.proc.pid, []))
        os.kill(self.proc.pid, signal.SIGHUP)
        end = time.monotonic() + 300
        while time.monotonic() < end:
            now = set(p for p in children_map().get(self.proc.pid, []) if alive(p))
            if len(now) == WORKERS and not now & old and get(self.base + "/api/version") == 200:
                break
            time.sleep(0.5)
        else:
            return False, "gunicorn's workers were not replaced within 300 s"
        for i, h in enumerate(self.handlers):
            kill_tree([h.pid], grace=60)
            h.wait()
            before = self.handlers_running()
            self.handlers[i] = self.start_handler(i + 1)
            end = time.monotonic() + 300
            while self.handlers_running() == before:
                if time.monotonic() > end or self.handlers[i].poll() is not None:
                    return False, f"handler_{i + 1} did not come back"
                time.sleep(0.5)
        return True, ""

    def stop(self):
        kill_tree([self.proc.pid] + [h.pid for h in self.handlers], grace=60)
        self.proc.wait()
        for h in self.handlers:
            h.wait()


# ---------------------------------------------------------------- Galaxy's API


def call(base, method, path, key, body=None, timeout=120):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, method=method, data=data,
                                 headers={"x-api-key": key, "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def get(url, key=None, timeout=10):
    """The status of a GET, 0 for no answer."""
    req = urllib.request.Request(url, headers={"x-api-key": key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return 0


def make_user(base):
    """A new user, its API key and a history: what upload_job.py does first."""
    email = f"u{int(time.time() * 1000)}@example.org"
    user = call(base, "POST", "/api/users", ADMIN_KEY,
                {"username": email.split("@")[0], "email": email, "password": "zerg-bench-pw"})
    key = call(base, "POST", f"/api/users/{user['id']}/api_key", ADMIN_KEY)
    history = call(base, "POST", "/api/histories", key, {"name": "galaxy bench"})
    return key, history["id"]


def submit_upload(base, key, history):
    target = {"destination": {"type": "hdas"},
              "elements": [{"src": "pasted", "paste_content": "hello zerg\n", "ext": "txt"}]}
    fetched = call(base, "POST", "/api/tools/fetch", key, {"history_id": history, "targets": [target]})
    return fetched["outputs"][0]["id"]


def wait_dataset(base, key, dataset, timeout):
    """The dataset's last state, polled until ok/error or the deadline."""
    end = time.monotonic() + timeout
    state = "?"
    while time.monotonic() < end:
        try:
            state = call(base, "GET", f"/api/datasets/{dataset}", key, timeout=30)["state"]
        except (OSError, ValueError, KeyError):
            state = "unreachable"
        if state in ("ok", "error"):
            break
        time.sleep(0.5)
    return state


# ---------------------------------------------------------------- measurements


def start(cls, name, tmp, phase, timeout=900):
    """Starts a server; returns it, the seconds to its first /api/version 200 and the seconds
    until every handler said it runs (polled side by side: either may come first)."""
    srv = cls(name, tmp, phase)
    t0 = time.monotonic()
    srv.start()
    first = handlers = None
    while first is None or handlers is None:
        if srv.proc.poll() is not None:
            raise RuntimeError(f"{name} exited at start; see {list(srv.logs)}")
        if time.monotonic() - t0 > timeout:
            srv.stop()
            raise RuntimeError(f"{name}: not up within {timeout} s; see {list(srv.logs)}")
        if first is None and get(srv.base + "/api/version", timeout=5) == 200:
            first = time.monotonic() - t0
            log(f"{name}: first /api/version 200 after {first:.1f} s")
        if handlers is None and srv.handlers_running() >= HANDLERS:
            handlers = time.monotonic() - t0
            log(f"{name}: both handlers running after {handlers:.1f} s")
        time.sleep(0.25)
    return srv, first, handlers


def wrk(url, key, duration, connections):
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "30s"]
    if key:
        argv += ["-H", f"x-api-key: {key}"]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=duration + 120).stdout
    return parse_wrk(out)


def machine_load():
    """The load average and the busiest processes, to say what else ran."""
    avg = " ".join(open("/proc/loadavg").read().split()[:3])
    top = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"],
                         capture_output=True, text=True).stdout.splitlines()[:5]
    return f"load {avg}; busiest: " + ", ".join(" ".join(t.split()) for t in top)


def phase1(cls, name, tmp, args):
    log(f"{name}: phase 1 ({machine_load()})")
    srv, first, handlers = start(cls, name, tmp, "phase1")
    try:
        time.sleep(5)
        pss_idle = pss_mib(srv.pids())
        log(f"{name}: PSS {pss_idle:.0f} MiB over {len(srv.pids())} processes")
        key, history = make_user(srv.base)
        t = time.monotonic()
        dataset = submit_upload(srv.base, key, history)
        state = wait_dataset(srv.base, key, dataset, args.job_timeout)
        job = time.monotonic() - t
        log(f"{name}: upload job {state} after {job:.1f} s")
        load = {}
        for path, k in (("/api/version", None), ("/api/histories", key)):
            wrk(srv.base + path, k, 2, args.connections)  # warm-up
            load[path] = wrk(srv.base + path, k, args.duration, args.connections)
            r = load[path]
            log(f"{name}: {path} {r['rps']:.1f} req/s p50 {r['p50']:.1f} ms p99 {r['p99']:.1f} ms "
                f"errors {r['errors']}")
        pss_load = pss_mib(srv.pids())
        log(f"{name}: PSS after load {pss_load:.0f} MiB ({machine_load()})")
        return dict(first=first, handlers=handlers, pss_idle=pss_idle, pss_load=pss_load,
                    job=job if state == "ok" else float("nan"), job_state=state, load=load)
    finally:
        srv.stop()


def reload_into(srv, result):
    try:
        result["ok"], result["msg"] = srv.reload()
    except Exception as e:  # a timeout or a vanished process: the reload failed, the run goes on
        result["ok"], result["msg"] = False, repr(e)


class LightLoad:
    """`clients` threads, each a request then `pause` s, /api/version and /api/histories in
    turn; every request is recorded as (start, seconds, ok, status)."""

    def __init__(self, base, key, clients, pause):
        self.base, self.key, self.pause = base, key, pause
        self.stop = threading.Event()
        self.records = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(clients)]
        for t in self.threads:
            t.start()

    def run(self, i):
        paths = ["/api/version", "/api/histories"]
        n = i
        while not self.stop.is_set():
            path = paths[n % 2]
            n += 1
            t0 = time.monotonic()
            status = get(self.base + path, self.key if path == "/api/histories" else None, timeout=60)
            with self.lock:
                self.records.append((t0, time.monotonic() - t0, 200 <= status < 500, status))
            self.stop.wait(self.pause)

    def between(self, a, b):
        with self.lock:
            return [r for r in self.records if a <= r[0] < b]

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join()


def phase2(cls, name, tmp, args, rows):
    log(f"{name}: phase 2, {args.reloads} reloads ({machine_load()})")
    srv, first, _ = start(cls, name, tmp, "phase2")
    out = dict(first2=first, reloads=[], failed=0, requests=0)
    rows[name] = out
    try:
        key, history = make_user(srv.base)
        load = LightLoad(srv.base, key, args.clients, args.pause)
        time.sleep(5)
        try:
            for i in range(args.reloads):
                result = {}
                handlers_before = srv.handlers_running()
                t0 = time.monotonic()
                th = threading.Thread(target=reload_into, args=(srv, result))
                th.start()
                time.sleep(args.job_delay)
                dataset, err = None, ""
                try:
                    dataset = submit_upload(srv.base, key, history)
                except (OSError, ValueError, KeyError) as e:
                    err = f"submit failed: {e}"
                th.join()
                took = time.monotonic() - t0
                # After the reload: the job's end, and every handler of the new generation
                # running (zerg starts its new mules as the old generation leaves).
                end = time.monotonic() + args.job_timeout
                state, job_done, back = (None, None, None) if dataset else (err, None, None)
                while (state is None or back is None) and time.monotonic() < end:
                    if state is None:
                        try:
                            s = call(srv.base, "GET", f"/api/datasets/{dataset}", key, timeout=30)["state"]
                        except (OSError, ValueError, KeyError):
                            s = "unreachable"
                        if s in ("ok", "error"):
                            state, job_done = s, time.monotonic() - t0
                    if back is None and srv.handlers_running() >= handlers_before + HANDLERS:
                        back = time.monotonic() - t0
                    time.sleep(0.5)
                state = state or f"{s} at the deadline"
                recs = load.between(t0, t0 + took)
                failed = [r for r in recs if not r[2]]
                lat = sorted(r[1] for r in recs if r[2])
                p99 = lat[int(0.99 * (len(lat) - 1))] * 1000 if lat else float("nan")
                row = dict(ok=result.get("ok"), msg=result.get("msg", ""), took=took, requests=len(recs),
                           failed=len(failed), statuses=sorted({r[3] for r in failed}), p99=p99,
                           job=state, job_done=job_done, back=back)
                out["reloads"].append(row)
                log(f"{name}: reload {i + 1}/{args.reloads} {'ok' if row['ok'] else 'FAILED ' + row['msg']} "
                    f"in {took:.0f} s; {len(recs)} requests meanwhile, {len(failed)} failed "
                    f"{row['statuses'] or ''}, p99 {p99:.0f} ms; job {state} at {fmt(job_done)} s, "
                    f"new handlers running at {fmt(back)} s after the reload began ({machine_load()})")
                time.sleep(args.gap)
        finally:
            load.close()
            out["requests"] = len(load.records)
            out["failed"] = sum(1 for r in load.records if not r[2])
            out["statuses"] = sorted({r[3] for r in load.records if not r[2]})
        return out
    finally:
        srv.stop()


# ---------------------------------------------------------------- tables


def fmt(x):
    return "-" if x is None else f"{x:.0f}"


def ratio(a, b):
    return f"{a / b:.2f}" if b and a == a and b == b else "-"


def table1(res, args):
    print(f"\nGalaxy 26.1.2, {WORKERS} web workers + {HANDLERS} job handlers each, SQLite; "
          f"wrk -t2 -c{args.connections} {args.duration} s per endpoint; {machine()}")
    names = [s for s in SERVERS if s in res]
    print(f"{'':34}" + "".join(f"{s:>12}" for s in names) + ("  zerg/gunicorn" if len(names) == 2 else ""))

    def row(label, f, fmt):
        vals = [f(res[s]) for s in names]
        extra = f"  {ratio(vals[0], vals[1]):>13}" if len(vals) == 2 else ""
        print(f"{label:34}" + "".join(f"{fmt.format(v):>12}" for v in vals) + extra)

    row("start to first /api/version, s", lambda r: r["first"], "{:.1f}")
    row("start to both handlers running, s", lambda r: r["handlers"], "{:.1f}")
    row("PSS whole tree idle, MiB", lambda r: r["pss_idle"], "{:.0f}")
    row("PSS whole tree after load, MiB", lambda r: r["pss_load"], "{:.0f}")
    for path in ("/api/version", "/api/histories"):
        row(f"{path} req/s", lambda r: r["load"][path]["rps"], "{:.1f}")
        row(f"{path} p50 ms", lambda r: r["load"][path]["p50"], "{:.0f}")
        row(f"{path} p99 ms", lambda r: r["load"][path]["p99"], "{:.0f}")
        row(f"{path} errors", lambda r: r["load"][path]["errors"], "{}")
    row("upload job to ok, s", lambda r: r["job"], "{:.1f}")
    sys.stdout.flush()


def table2(rows, args):
    print(f"\nreloads under light load ({args.clients} clients, {args.pause:g} s pause, /api/version "
          f"and /api/histories in turn), an upload job submitted {args.job_delay:g} s into each reload; "
          f"seconds from each reload's start, min-max")
    print(f"{'server':9} {'reloads ok':>10} {'requests':>9} {'failed':>7} {'jobs ok':>8} "
          f"{'reload done':>12} {'job ok':>10} {'handlers up':>12} {'max p99 ms':>11}")
    for name, r in rows.items():
        rl = r["reloads"]
        if not rl:
            continue

        def span(xs):
            xs = [x for x in xs if x is not None]
            return f"{min(xs):.0f}-{max(xs):.0f}" if xs else "-"

        p99 = max((x["p99"] for x in rl), default=float("nan"))
        print(f"{name:9} {sum(1 for x in rl if x['ok']):>5}/{len(rl):<4} {r['requests']:>9} {r['failed']:>7} "
              f"{sum(1 for x in rl if x['job'] == 'ok'):>4}/{len(rl):<3} {span(x['took'] for x in rl):>12} "
              f"{span(x['job_done'] for x in rl):>10} {span(x['back'] for x in rl):>12} {p99:>11.0f}")
        if r.get("statuses"):
            print(f"          failed statuses (0 = no answer): {r['statuses']}")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reloads", type=int, default=10)
    ap.add_argument("--duration", type=int, default=15, help="seconds of wrk per endpoint")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--clients", type=int, default=3, help="threads of light load during reloads")
    ap.add_argument("--pause", type=float, default=0.05, help="seconds between a client's requests")
    ap.add_argument("--job-delay", type=float, default=10.0, help="seconds into a reload to submit a job")
    ap.add_argument("--job-timeout", type=float, default=300.0)
    ap.add_argument("--gap", type=float, default=5.0, help="seconds between reloads")
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--skip-phase1", action="store_true")
    args = ap.parse_args()
    servers = [s for s in args.servers.split(",") if s]
    prepare()
    tmp = tempfile.mkdtemp(prefix="zerg-galaxy-bench-")
    log(f"work dirs and logs under {tmp}")
    classes = {"zerg": Zerg, "gunicorn": Gunicorn}
    if not args.skip_phase1:
        res = {}
        for s in servers:
            res[s] = phase1(classes[s], s, tmp, args)
            table1(res, args)
    if args.reloads:
        rows = {}
        for s in servers:
            try:
                phase2(classes[s], s, tmp, args, rows)
            finally:
                table2(rows, args)
        print("start to first /api/version in phase 2, s: "
              + ", ".join(f"{s} {r['first2']:.1f}" for s, r in rows.items()))
    log(f"logs kept under {tmp}")


if __name__ == "__main__":
    main()
