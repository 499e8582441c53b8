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
