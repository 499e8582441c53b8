"""A WSGI app exercising PEP 3333 corners, routed by PATH_INFO. Used by tests/http.rs."""

import json
import os
import sys
import tempfile
import threading
import time
import weakref
import zlib


def _qs(environ):
    out = {}
    for part in environ.get("QUERY_STRING", "").split("&"):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
    return out


def _text(start_response, body, status="200 OK", extra=()):
    if isinstance(body, str):
        body = body.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))] + list(extra))
    return [body]


# start_response and write kept past their request by /keep, used by /use-kept.
_kept = {}
# How often /ticker's background thread has run.
_ticker = []
# What /stream's iterators have done in this worker: chunks yielded, iterators ended or closed.
_streams = {"chunks": 0, "closed": 0}


_STASHED = []
# "hold" runs on past its response until a "release" request has been called.
_RELEASED = threading.Event()
_HELD = []  # whether each hold saw its release


def _environ_chunks(environ):
    yield json.dumps({k: v for k, v in environ.items() if isinstance(v, (str, bool, int, tuple))}).encode()


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hello":
        return _text(start_response, "Hello, World!")
    if path == "/pid":
        return _text(start_response, str(os.getpid()))
    if path == "/echo":
        # Streams the body in 64 KiB reads: the server must never hold it whole.
        crc, total = 0, 0
        stream = environ["wsgi.input"]
        while True:
            chunk = stream.read(65536)
            if not chunk:
                break
            total += len(chunk)
            crc = zlib.crc32(chunk, crc)
        return _text(start_response, f"{total} {crc}")
    if path == "/lines":
        lines = list(environ["wsgi.input"])
        return _text(start_response, json.dumps([line.decode() for line in lines]))
    if path == "/stream":
        mib = int(_qs(environ).get("mib", "1"))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        block = bytes(range(256)) * 4096  # 1 MiB

        def gen():
            try:
                for _ in range(mib):
                    _streams["chunks"] += 1
                    yield block
            finally:
                _streams["closed"] += 1

        return gen()
    if path == "/streams":
        return _text(start_response, json.dumps(_streams))
    if path == "/error":
        raise RuntimeError("boom from the test app")
    if path == "/slow":
        qs = _qs(environ)
        if "started" in qs:
            # Tells the test the request is inside the app.
            open(qs["started"], "w").close()
        time.sleep(float(qs.get("s", "2")))
        return _text(start_response, "slow done")
    if path == "/keep":
        _kept["start_response"] = start_response
        _kept["write"] = start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"kept"]
    if path == "/keep-weakly":
        # Only a weak reference, which start_response's reference count does not show.
        _kept["weak"] = weakref.ref(start_response)
        return _text(start_response, "kept weakly")
    if path == "/use-weak":
        # The weakly kept start_response of a finished request is not this request's.
        return _text(start_response, "same" if _kept["weak"]() is start_response else "other")
    if path == "/use-kept":
        # The callables of a finished request must not reach this one.
        outcomes = []
        for call in (lambda: _kept["write"](b"leaked"), lambda: _kept["start_response"]("500 Oops", [])):
            try:
                call()
                outcomes.append("accepted")
            except Exception as e:
                outcomes.append(type(e).__name__)
        return _text(start_response, " ".join(outcomes))
    if path == "/ticker":
        # A background thread of the app's, as big apps have (heartbeats, monitors): it
        # needs the GIL every millisecond or so. Returns how often it has run.
        if not _ticker:
            import threading

            def tick():
                while True:
                    _ticker[0] += 1
                    time.sleep(0.001)

            _ticker.append(0)
            threading.Thread(target=tick, daemon=True).start()
        return _text(start_response, str(_ticker[0]))
    if path == "/signatures":
        # start_response refuses what a Python function with its signature would refuse, and
        # takes its parameters by name too.
        outcomes = []
        for args, kwargs in [
            ((), {}),
            (("200 OK",), {}),
            (("200 OK", [], None, 4), {}),
            (("200 OK", []), {"colour": "red"}),
            (("200 OK", []), {"status": "201 Created"}),
            ((200, []), {}),
        ]:
            try:
                start_response(*args, **kwargs)
                outcomes.append("accepted")
            except TypeError as e:
                outcomes.append(str(e))
        body = "\n".join(outcomes).encode()
        start_response(headers=[("Content-Length", str(len(body)))], status="200 OK", exc_info=None)
        return [body]
    if path == "/drip":
        # A stream that takes its time: n chunks, s seconds apart.
        qs = _qs(environ)
        n, pause = int(qs.get("n", "3")), float(qs.get("s", "0.5"))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(n))])

        def drip():
            for i in range(n):
                if i:
                    time.sleep(pause)
                yield b"."

        return drip()
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"and returned"]
    if path == "/file":
        f = tempfile.TemporaryFile()
        f.write(b"x" * 100000)
        f.seek(0)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 8192)
    if path == "/exc-info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("changed my mind")
        except ValueError:
            return _recover(start_response, sys.exc_info())
    if path.startswith("/environ/"):
        # What an app may do to its environ; the server must never hand a changed or kept
        # one to another request.
        steps = path.split("/")
        if "stash" in steps:
            _STASHED.append(environ)  # kept past the call
        if "stashed" in steps:
            environ = _STASHED[-1]
        if "mark" in steps:
            environ["app.mark"] = 1  # a key added
        if "scheme" in steps:
            environ["wsgi.url_scheme"] = "https"  # a key changed, as ProxyFix does
        if "shift" in steps:
            # Mounted below /environ, as werkzeug's DispatcherMiddleware does.
            environ["SCRIPT_NAME"], environ["PATH_INFO"] = "/environ", path[len("/environ"):]
        if "pop" in steps:
            environ.pop("HTTP_X_TWO", None)
        if "setdel" in steps:
            environ["x"] = 1
            del environ["x"]  # changed and changed back
        if "input" in steps:
            environ = dict(environ, input=environ["wsgi.input"].read().decode())
        if "raise" in steps:
            raise RuntimeError("the app fails with its environ in its frame")
        if "release" in steps:
            _RELEASED.set()
        if "held" in steps:
            return _text(start_response, json.dumps(_HELD))
        if "hold" in steps:
            # Its whole Content-Length with write(): the response is complete while the app
            # still runs, and the connection's next request is read and called meanwhile.
            _RELEASED.clear()
            body = json.dumps({k: v for k, v in environ.items() if isinstance(v, (str, bool, int, tuple))}).encode()
            write = start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            write(body)
            _HELD.append(_RELEASED.wait(10))
            return []
        if "gen" in steps:
            start_response("200 OK", [("Content-Type", "application/json")])
            return _environ_chunks(environ)  # its frame holds the environ while it streams
    if path.startswith("/environ"):
        safe = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int, tuple))}
        return _text(start_response, json.dumps(safe))
    if path == "/close":
        return _Closing(start_response)
    return _text(start_response, "not found", "404 Not Found")


def _recover(start_response, exc_info):
    body = b"recovered"
    start_response("503 Service Unavailable", [("Content-Length", str(len(body)))], exc_info)
    return [body]


class _Closing:
    """An iterable with close(); close() records that it ran in a file the test reads."""

    def __init__(self, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

    def __iter__(self):
        yield b"closing"

    def close(self):
        marker = os.environ.get("ZERG_TEST_CLOSE_MARKER")
        if marker:
            with open(marker, "a") as f:
                f.write("closed\n")
