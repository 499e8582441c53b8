"""zerg's wrapper around every ASGI call (each request, and the lifespan): it tells the server
how the app's coroutine ended, so that a request whose app raised or returned early is
answered (500, or a cut stream) and logged with its traceback."""


async def run(app, scope, receive, send):
    try:
        await app(scope, receive, send)
    except BaseException as exc:
        send.raised(exc)
    else:
        send.returned()
