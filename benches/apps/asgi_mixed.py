"""The benchmark's raw ASGI app for bodies, identical for every ASGI server: `/big` streams
1 MiB in 64 KiB chunks (`more_body`), `/upload` reads a request body whole through
`receive()` and answers its length."""

CHUNK = b"x" * (64 << 10)
CHUNKS = 16


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/big":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"),
                                (b"content-length", str(len(CHUNK) * CHUNKS).encode())]})
        for _ in range(CHUNKS - 1):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": CHUNK})
        return
    if path == "/upload":
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = str(size).encode()
    else:
        body = b"not found"
    await send({"type": "http.response.start", "status": 200 if path == "/upload" else 404,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
