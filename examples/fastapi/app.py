"""A FastAPI app served by zerg's ASGI workers: JSON endpoints, a lifespan that opens (and
closes) what the app needs once per worker, and server-sent events that end when the client
goes away."""

import asyncio
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse


@asynccontextmanager
async def lifespan(app):
    # Runs in each worker before it accepts: a failure here fails the reload, which rolls
    # back to the serving generation with this error in `zergctl reload`'s output.
    yield {"worker_pid": os.getpid()}
    # Runs once the worker has drained.


app = FastAPI(lifespan=lifespan)


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}


@app.get("/whoami")
async def whoami(request: Request):
    return {"worker_pid": request.state.worker_pid}


@app.get("/events")
async def events(request: Request):
    async def stream():
        n = 0
        while not await request.is_disconnected():
            n += 1
            yield f"data: tick {n}\n\n"
            await asyncio.sleep(1)

    return StreamingResponse(stream(), media_type="text/event-stream")
