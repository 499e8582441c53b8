"""The benchmark's FastAPI app: JSON at `/items/{item_id}`, with a validated path parameter
and query string (FastAPI's tutorial example)."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}
