"""Parses an OpenMetrics exposition (a file named on the command line) with the
Prometheus project's own Python parser, and prints its samples as JSON lines:
{"name": ..., "labels": {...}, "value": ...}. Exits 3 if the parser is missing,
2 if the text does not parse."""

import json
import sys

try:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
except ImportError:
    sys.stderr.write("python module prometheus_client is missing: pip install prometheus-client\n")
    sys.exit(3)

with open(sys.argv[1], encoding="utf-8") as f:
    text = f.read()
try:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            print(json.dumps({"name": sample.name, "labels": sample.labels, "value": sample.value}))
except Exception as error:  # the parser raises ValueError and friends
    sys.stderr.write(f"not valid OpenMetrics: {error}\n")
    sys.exit(2)
