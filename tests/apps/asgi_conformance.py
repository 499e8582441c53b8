"""A raw ASGI 3 app (no framework) for tests/asgi.rs: it echoes what the server gives it, so
the tests can hold it against asgiref's spec, and notes what it lives through (lifespan,
disconnects) in the file named by ASGI_EVENTS, one line each.

  /echo...     the scope as JSON (headers and byte strings as latin-1 text), the body it read
               and each http.request message's size and more_body
  /stream      chunks "chunk 1" .. "chunk N" (?n=N), each sent once the file named by ?gate=
               has as many lines as chunks sent (no gate: at once)
  /sse         "data: tick N" events until receive() says http.disconnect, then notes it
  /read-slowly reads the body one message at a time until http.disconnect, noting the bytes
  /raise       raises before responding; /return returns without responding
  /state       the scope's lifespan state
  /version     VERSION (from the file `version` beside this one, if any)
  /mule        sends the request body to mule 1 with uwsgi.mule_msg
  /backpressure  streams 64 KiB chunks until a send() waits 2 s for the client, and notes
               after how many
  /stop-loop   stops the worker's event loop (an app's bug)

make_app() is a factory returning the app (`module: "asgi_conformance:make_app()"`).

Lifespan: startup puts {"greeting": ...} in the state, or fails with ASGI_FAIL_STARTUP's
text as its message; shutdown notes "shutdown".
"""

import asyncio
import json
import os
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    with open(os.path.join(HERE, "version")) as f:
        VERSION = f.read().strip()
except OSError:
    VERSION = "none"


def note(line):
    path = os.environ.get("ASGI_EVENTS")
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()} {line}\n")


def text(b):
    return b.decode("latin-1")


async def lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            failure = os.environ.get("ASGI_FAIL_STARTUP")
            if failure:
                await send({"type": "lifespan.startup.failed", "message": failure})
                return
            scope["state"]["greeting"] = "hello from lifespan"
            note("startup")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            note("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def respond(send, status, body, content_type=b"text/plain"):
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


async def read_body(receive):
    body, messages = b"", []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            messages.append(message["type"])
            return body, messages
        body += message.get("body", b"")
        messages.append([len(message.get("body", b"")), message.get("more_body", False)])
        if not message.get("more_body", False):
            return body, messages


async def echo(scope, receive, send):
    body, messages = await read_body(receive)
    seen = {
        "type": scope["type"],
        "asgi": scope["asgi"],
        "http_version": scope["http_version"],
        "method": scope["method"],
        "scheme": scope["scheme"],
        "path": scope["path"],
        "raw_path": text(scope["raw_path"]),
        "query_string": text(scope["query_string"]),
        "root_path": scope["root_path"],
        "headers": [[text(k), text(v)] for k, v in scope["headers"]],
        "headers_are_bytes": all(type(k) is bytes and type(v) is bytes for k, v in scope["headers"]),
        "client": list(scope["client"]) if scope.get("client") else None,
        "server": list(scope["server"]) if scope.get("server") else None,
        "state": dict(scope.get("state", {})),
        "body": text(body),
        "messages": messages,
    }
    await respond(send, 200, json.dumps(seen).encode(), b"application/json")


async def stream(scope, receive, send):
    query = urllib.parse.parse_qs(text(scope["query_string"]))
    n = int(query.get("n", ["3"])[0])
    gate = query.get("gate", [None])[0]
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    for i in range(1, n + 1):
        while gate is not None:
            try:
                with open(gate) as f:
                    if len(f.read().splitlines()) >= i - 1:
                        break
            except OSError:
                pass
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": f"chunk {i}\n".encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def sse(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    disconnected = asyncio.Event()

    async def watch():
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnected.set()

    watcher = asyncio.ensure_future(watch())
    tick = 0
    try:
        while not disconnected.is_set():
            tick += 1
            await send({"type": "http.response.body", "body": f"data: tick {tick}\n\n".encode(),
                        "more_body": True})
            try:
                await asyncio.wait_for(disconnected.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
        note("sse: disconnect")
    except OSError:
        note("sse: send raised OSError")
    finally:
        watcher.cancel()


async def read_slowly(scope, receive, send):
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            note(f"body: disconnect after {total} bytes")
            return
        total += len(message.get("body", b""))
        if not message.get("more_body", False):
            await respond(send, 200, str(total).encode())
            return
        await asyncio.sleep(0.01)


async def backpressure(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    chunk = b"x" * (64 << 10)
    for sent in range(1000):
        message = {"type": "http.response.body", "body": chunk, "more_body": True}
        try:
            await asyncio.wait_for(send(message), 2)
        except asyncio.TimeoutError:
            note(f"backpressure: send waited after {sent} chunks")
            return
    note("backpressure: none")


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    assert scope["type"] == "http"
    path = scope["path"]
    if path.startswith("/echo"):
        return await echo(scope, receive, send)
    if path == "/stream":
        return await stream(scope, receive, send)
    if path == "/sse":
        return await sse(scope, receive, send)
    if path == "/read-slowly":
        return await read_slowly(scope, receive, send)
    if path == "/raise":
        raise RuntimeError("the app failed on purpose")
    if path == "/return":
        return
    if path == "/state":
        return await respond(send, 200, json.dumps(dict(scope["state"])).encode(), b"application/json")
    if path == "/version":
        return await respond(send, 200, VERSION.encode())
    if path == "/stop-loop":
        asyncio.get_running_loop().stop()
        return await respond(send, 200, b"stopping")
    if path == "/backpressure":
        return await backpressure(scope, receive, send)
    if path == "/mule":
        import uwsgi

        body, _ = await read_body(receive)
        uwsgi.mule_msg(body, 1)
        return await respond(send, 200, b"sent")
    await respond(send, 404, b"not found")


def make_app():
    """The factory form: called once at import."""
    return application
