"""Farm benchmark, mule side: takes messages until "stop", then writes count, first/last
receive times and latencies to $FARM_BENCH_OUT.<mule id>."""

import os
import time

import uwsgi

latencies = []
first = last = 0
while True:
    msg = uwsgi.farm_get_msg()
    if msg is None:
        continue
    if msg == b"stop":
        break
    now = time.monotonic_ns()
    first = first or now
    last = now
    latencies.append(now - int(msg))
with open(f"{os.environ['FARM_BENCH_OUT']}.{uwsgi.mule_id()}", "w") as f:
    f.write(f"{len(latencies)} {first} {last}\n")
    f.write(" ".join(str(x) for x in latencies))
# uWSGI respawns a mule whose script returns; wait to be stopped instead.
while True:
    time.sleep(3600)
