"""Runs one upload job end to end against the example, as a user would: creates a user and an
API key with the example's `bootstrap_admin_api_key`, a history, then pastes a line of text
through `POST /api/tools/fetch` and waits for the dataset to be `ok`. One of the handler
mules takes the job (the web workers take none).

    examples/galaxy/.venv/bin/python examples/galaxy/upload_job.py [http://127.0.0.1:8083]
"""

import json
import sys
import time
import urllib.request

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8083"
ADMIN_KEY = "zerg-example-admin-key"


def call(method, path, key, body=None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"x-api-key": key, "content-type": "application/json"}
    request = urllib.request.Request(BASE + path, method=method, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read() or b"null")


email = f"u{int(time.time() * 1000)}@example.org"
user = call(
    "POST",
    "/api/users",
    ADMIN_KEY,
    {"username": email.split("@")[0], "email": email, "password": "zerg-example-pw"},
)
key = call("POST", f"/api/users/{user['id']}/api_key", ADMIN_KEY)
history = call("POST", "/api/histories", key, {"name": "zerg upload"})
started = time.time()
target = {
    "destination": {"type": "hdas"},
    "elements": [{"src": "pasted", "paste_content": "hello zerg\n", "ext": "txt"}],
}
fetched = call("POST", "/api/tools/fetch", key, {"history_id": history["id"], "targets": [target]})
dataset = fetched["outputs"][0]["id"]
while (state := call("GET", f"/api/datasets/{dataset}", key)["state"]) not in ("ok", "error"):
    time.sleep(0.5)
print(f"upload job: dataset {state} after {time.time() - started:.1f} s")
sys.exit(0 if state == "ok" else 1)
