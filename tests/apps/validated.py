"""The conformance app wrapped in the standard library's PEP 3333 validator: any breach of the
spec by the server raises AssertionError (a 500) or a WSGIWarning (turned into an error here)."""

import os
import sys
import warnings
from wsgiref.validate import validator

sys.path.insert(0, os.path.dirname(__file__))
warnings.simplefilter("error")

from conformance import application as _app  # noqa: E402

application = validator(_app)
