"""An app whose import fails, as a broken release would."""

import module_that_does_not_exist  # noqa: F401


def application(environ, start_response):
    start_response("200 OK", [])
    return [b"unreachable"]
