"""A raw ASGI app that knows nothing of the lifespan protocol: like many hand-written apps (and
Django's handler), it refuses any scope but HTTP by raising at once. It must still be served,
as under uvicorn's `lifespan: auto`."""


async def application(scope, receive, send):
    if scope["type"] != "http":
        raise ValueError(f"this app serves HTTP only, not {scope['type']}")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"served without lifespan"})
