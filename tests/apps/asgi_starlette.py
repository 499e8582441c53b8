"""A Starlette app for tests/asgi.rs (needs target/asgi-venv): plain text, lifespan state, a
1 MiB response and a 1 MiB upload."""

from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

BIG = b"x" * (1 << 20)


async def hello(request):
    return PlainTextResponse("Hello, world!")


async def state(request):
    return PlainTextResponse(request.state.greeting)


async def big(request):
    return Response(BIG, media_type="application/octet-stream")


async def upload(request):
    return PlainTextResponse(str(len(await request.body())))


@asynccontextmanager
async def lifespan(app):
    yield {"greeting": "hello from starlette"}


app = Starlette(
    routes=[Route("/", hello), Route("/state", state), Route("/big", big),
            Route("/upload", upload, methods=["POST"])],
    lifespan=lifespan,
)
