"""Reading a Prometheus scrape in tests: one sample's value, 0 if it is not there yet."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample(scrape: str, name: str, **labels: str) -> float:
    """The value of sample `name` with (at least) these labels, summed over the rest."""
    total = 0.0
    for family in text_string_to_metric_families(scrape):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                total += found.value
    return total


def families(scrape: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(scrape)}
