"""An app whose import takes a while, so that a test can act while its generation starts: it
touches SLOW_IMPORT_STARTED, then sleeps SLOW_IMPORT_SECS."""

import os
import time

open(os.environ["SLOW_IMPORT_STARTED"], "w").close()
time.sleep(float(os.environ.get("SLOW_IMPORT_SECS", "2")))


def application(environ, start_response):
    start_response("200 OK", [("Content-Length", "4")])
    return [b"slow"]
