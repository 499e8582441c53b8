"""Helpers shared by the benchmark scripts: the throwaway venv, the release build, free ports,
and the line that says which machine a table came from."""

import os
import platform
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV = os.path.join(HERE, ".venv")
APPS = os.path.join(HERE, "apps")


def sh(*cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, **kw)


def venv_bin(name):
    return os.path.join(VENV, "bin", name)


def installed(name):
    """True when the venv has `name` as a command or as an importable module."""
    if os.path.exists(venv_bin(name)):
        return True
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({name!r}) is None)"
    return subprocess.run([venv_bin("python"), "-c", probe]).returncode == 0


def setup(packages):
    """Creates benches/.venv, pip-installs `packages` ({command or module: pip spec}) that
    are missing, and builds zerg in release mode."""
    if not os.path.exists(venv_bin("python")):
        sh(sys.executable, "-m", "venv", VENV)
    missing = [spec for name, spec in packages.items() if not installed(name)]
    if missing:
        sh(venv_bin("pip"), "install", "-q", *missing)
    sh("cargo", "build", "-q", "--release", "--workspace", cwd=ROOT)


def zerg_bin(name):
    return os.path.join(ROOT, "target", "release", name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def parse_wrk(out, socket_errors=("connect", "read", "write", "timeout")):
    """req/s, p50 and p99 in ms, and errors from the output of `wrk --latency`: non-2xx answers
    plus the kinds of socket error named in `socket_errors`."""
    res = {"rps": 0.0, "p50": float("nan"), "p99": float("nan"), "errors": 0}
    for line in out.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            res["rps"] = float(words[1])
        elif words[:1] == ["50%"]:
            res["p50"] = ms(words[1])
        elif words[:1] == ["99%"]:
            res["p99"] = ms(words[1])
        elif line.strip().startswith("Non-2xx"):
            res["errors"] += int(words[-1])
        elif line.strip().startswith("Socket errors"):
            # "Socket errors: connect 0, read 0, write 0, timeout 0"
            counts = dict(zip(words[2::2], (int(w.strip(",")) for w in words[3::2])))
            res["errors"] += sum(counts.get(kind, 0) for kind in socket_errors)
    return res


def ms(text):
    """A wrk duration (`812.00us`, `1.20ms`, `2.01s`, `1.00m`) in milliseconds."""
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


def process_tree(*roots):
    """The roots and all their descendants, as {pid: [its children]}."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = {}, list(roots)
    while todo:
        p = todo.pop()
        out[p] = children.get(p, [])
        todo.extend(out[p])
    return out
