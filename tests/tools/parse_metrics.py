"""Parses Prometheus text exposition from stdin with prometheus_client's own parser (the
reference Python implementation) and prints every sample as JSON: a list of
[name, labels, value]. A text the parser refuses makes it raise, and exit non-zero."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append([s.name, s.labels, s.value])
json.dump(samples, sys.stdout)
