"""An app built by a factory and imported as `webapp.factory:make_app()`, the way Galaxy's
`galaxy.webapps.galaxy.buildapp:uwsgi_app()` is. It imports a module that only a virtualenv
provides and reports where things came from."""

import os
import sys

import only_in_venv  # provided by the test's virtualenv


def make_app():
    def app(environ, start_response):
        body = "|".join([only_in_venv.WHERE, os.getcwd(), sys.prefix, os.environ.get("ZERG_TEST_ENV", "")]).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    return app
