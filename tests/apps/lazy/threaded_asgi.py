"""An ASGI app that, like Galaxy served through a2wsgi, runs its work on an event loop of its
own, on a thread it starts while it is built: each request's answer is computed on that loop.

Imported in a master that then forks (no `lazy-apps`), a worker has the loop object but not
its thread: the request waits, and answers 503 after `THREADED_WAIT` seconds (default 5)
instead of hanging. Imported in each worker (`lazy-apps: true`), the answer is
`built=PID pid=PID thread=app-loop` with the same pid twice."""

import asyncio
import os
import threading

BUILT_IN = os.getpid()
WAIT = float(os.environ.get("THREADED_WAIT", "5"))
app_loop = asyncio.new_event_loop()
threading.Thread(target=app_loop.run_forever, name="app-loop", daemon=True).start()


async def where():
    return f"built={BUILT_IN} pid={os.getpid()} thread={threading.current_thread().name}"


async def on_app_loop():
    future = asyncio.run_coroutine_threadsafe(where(), app_loop)
    return await asyncio.wait_for(asyncio.wrap_future(future), WAIT)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    try:
        body, status = await on_app_loop(), 200
    except asyncio.TimeoutError:
        body, status = f"no thread answered: built={BUILT_IN} pid={os.getpid()}", 503
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})
