"""An experiment condition's reliability diagram, pooled over its seeds' metric histories.

Each run records its test split's reliability bins once per data phase, at its last epoch
(``reliability_count/<b>``, ``reliability_accuracy/<b>``, ``reliability_confidence/<b>``);
pooling sums the samples per bin, so the condition's diagram is the one of all its seeds'
test predictions together.
"""

from __future__ import annotations

from .contract import metric_names as mn


def pooled_reliability(histories: list[list[dict]]) -> dict[str, list[float]] | None:
    """The condition's reliability diagram: each bin's samples summed over the seeds, with
    their accuracy and mean confidence weighted by them (the last train epoch's bins of each
    run, ``reliability_*/<b>``); None when no run recorded bins."""
    counts: dict[int, float] = {}
    hits: dict[int, float] = {}
    confidence: dict[int, float] = {}
    for history in histories:
        last = {}  # (base, bin) → value at the latest epoch that has it
        for p in sorted(history, key=lambda p: p["epoch"]):
            base, _, index = p["name"].partition("/")
            if p["phase"] == "train" and base in mn.RELIABILITY and index.isdigit():
                last[(base, int(index))] = p["value"]
        for (base, b), n in last.items():
            if base != mn.RELIABILITY_COUNT:
                continue
            counts[b] = counts.get(b, 0.0) + n
            hits[b] = hits.get(b, 0.0) + n * last.get((mn.RELIABILITY_ACCURACY, b), 0.0)
            confidence[b] = confidence.get(b, 0.0) + n * last.get(
                (mn.RELIABILITY_CONFIDENCE, b), 0.0
            )
    if not counts:
        return None
    bins = range(1, max(counts) + 1)
    return {
        "counts": [counts.get(b, 0.0) for b in bins],
        "accuracy": [hits.get(b, 0.0) / counts[b] if counts.get(b) else 0.0 for b in bins],
        "confidence": [confidence.get(b, 0.0) / counts[b] if counts.get(b) else 0.0 for b in bins],
    }
