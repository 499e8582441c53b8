#!/bin/sh
# Installs Galaxy 26.1.2 from PyPI into examples/galaxy/.venv and creates its SQLite database,
# so that `zerg-pool --config examples/galaxy/zerg.yml` starts it.
#
# `pip install galaxy==26.1.2` fails as published (it pins certifi==2026.10.19, and only
# 2026.10.19.post1 exists): constraints-26.1.2.txt is the metapackage's own pins with that
# one line changed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
echo "Installing Galaxy 26.1.2 into $here/.venv: about 1.3 GB of disk, 1-2 minutes."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q -c constraints-26.1.2.txt galaxy-web-apps==26.1.2 galaxy-app==26.1.2
if [ ! -f database/universe.sqlite ]; then
    # One Galaxy process creates the tables first, so that the two web workers and two
    # handlers starting together do not race on it. It stops once it says it runs.
    echo "Creating the database (about 30 s)..."
    mkdir -p database
    .venv/bin/galaxy-main -c galaxy.yml --server-name init > database/init.log 2>&1 &
    init=$!
    tries=0
    until grep -q "is running" database/init.log; do
        if ! kill -0 "$init" 2>/dev/null; then
            echo "Galaxy failed to create its database; see $here/database/init.log" >&2
            exit 1
        fi
        tries=$((tries + 1))
        if [ "$tries" -gt 600 ]; then
            kill "$init"
            echo "Galaxy took over 10 minutes to create its database; see $here/database/init.log" >&2
            exit 1
        fi
        sleep 1
    done
    kill -TERM "$init"
    wait "$init" || true
fi
echo "Done. From the repository root: cargo build --workspace && ./target/debug/zerg-pool --config examples/galaxy/zerg.yml"
