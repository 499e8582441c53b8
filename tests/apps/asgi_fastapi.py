"""A FastAPI app for tests/asgi.rs (needs target/asgi-venv): JSON in and out, validation, a
sync endpoint (run on anyio's threads), lifespan state, and server-sent events that stop when
the client goes away (noted in the file named by ASGI_EVENTS)."""

import asyncio
import os
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse


def note(line):
    path = os.environ.get("ASGI_EVENTS")
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()} {line}\n")


@asynccontextmanager
async def lifespan(app):
    yield {"greeting": "hello from fastapi"}


app = FastAPI(lifespan=lifespan)


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(item: dict):
    return item


@app.get("/state")
async def state(request: Request):
    return {"greeting": request.state.greeting}


@app.get("/sync")
def sync():
    return {"thread": threading.current_thread().name}


@app.get("/events")
async def events(request: Request):
    async def stream():
        n = 0
        while not await request.is_disconnected():
            n += 1
            yield f"data: {n}\n\n"
            await asyncio.sleep(0.05)
        note("fastapi sse: disconnect")

    return StreamingResponse(stream(), media_type="text/event-stream")
