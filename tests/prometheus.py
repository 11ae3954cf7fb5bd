"""Reading what the product exports, as Prometheus would: the text format, parsed by the library."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# What a label may say, written down here rather than imported from the code under test.
VOCABULARY: dict[str, set[str]] = {
    "kind": {"coupon", "points", "points_redeem", "vendor", "other"},
    "status": {"succeeded", "failed", "retrying", "gave_up", "unknown", "skipped", "other"},
    "endpoint": {
        "coupon_update", "points_update", "points_redeem", "vendor_update", "oauth_token", "other",
    },
    "http_class": {"none", "1xx", "2xx", "3xx", "4xx", "5xx", "other"},
    "result": {
        "succeeded", "partial", "failed", "answered", "rejected", "transient", "ambiguous",
        "rate_limited", "protocol_error", "unauthorized", "error", "other",
    },
    "fate": {"stored", "duplicate", "rejected", "dead_lettered", "requeued", "other"},
    "work": {"live", "redriven", "order", "redeem_request", "other"},
    "item": {"redemption", "redeem_request"},
    "state": {"pending", "in_flight", "retrying", "gave_up"},
    "queue": {"events", "reconcile", "redrive", "dead"},
}  # fmt: skip
#: A platform code the product knows (3 to 4 digits), or one of the two catch-alls.
CODE = re.compile(r"^(none|other|\d{3,4})$")


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    answer = requests.get(f"http://{host}:{port}/metrics", timeout=10)
    answer.raise_for_status()
    return parse(answer.text)


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def by_labels(samples: Samples, name: str, *keys: str) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for (n, ls), value in samples.items():
        if n == name and value:
            labels = dict(ls)
            counts[tuple(labels[k] for k in keys)] += int(value)
    return counts


def unbounded_labels(samples: Samples, forbidden: Collection[str] = ()) -> list[Any]:
    """Every (metric, label, value) of ours outside the vocabulary, or equal to an id."""
    problems = []
    for (name, labels), _value in samples.items():
        if not name.startswith("recon_"):
            continue
        for label, value in labels:
            if value in forbidden:
                problems.append((name, label, value, "is an id from the data"))
            elif label == "code":
                if not CODE.match(value):
                    problems.append((name, label, value, "not a known code"))
            elif label == "le":
                float(value)  # a histogram bucket bound
            elif value not in VOCABULARY.get(label, set()):
                problems.append((name, label, value, "not in the vocabulary"))
    return problems
