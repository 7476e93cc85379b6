#!/usr/bin/env python3
"""Parses a Prometheus text exposition from stdin with the Prometheus
project's own parser (PyPI prometheus-client) and prints every sample as
one JSON line: {"samples": [{"name", "labels", "value"}], "types": {family: type}}.
Exits non-zero (with the parser's error) on anything the parser rejects."""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
samples, types = [], {}
for family in text_string_to_metric_families(text):
    types[family.name] = family.type
    for s in family.samples:
        v = s.value
        samples.append({"name": s.name, "labels": s.labels, "value": None if math.isnan(v) else v})
print(json.dumps({"samples": samples, "types": types}))
