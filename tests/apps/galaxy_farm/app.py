"""The web side of tests/galaxy_mules.rs: queues jobs for the `jobs` farm the way Galaxy's web
workers do, as str messages (`/job?NAME`), or through `mule_msg` with a str (`/mule-job?NAME`)."""

import uwsgi


def application(environ, start_response):
    name = environ.get("QUERY_STRING", "")
    if environ["PATH_INFO"] == "/job":
        uwsgi.farm_msg("jobs", name)
    elif environ["PATH_INFO"] == "/mule-job":
        uwsgi.mule_msg(name, "jobs")
    elif environ["PATH_INFO"] == "/bytes-like":
        uwsgi.farm_msg(b"jobs", bytearray(name.encode()))
        uwsgi.farm_msg("jobs", memoryview(name.encode() + b"-view"))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
