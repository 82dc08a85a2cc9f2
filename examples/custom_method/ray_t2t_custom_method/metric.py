"""char_accuracy: the share of characters right, position by position, against the best reference."""

from __future__ import annotations

from collections.abc import Sequence

from ray_t2t.metrics import Metric


def char_accuracy(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    def score(prediction: str, reference: str) -> float:
        right = sum(a == b for a, b in zip(prediction, reference))
        return right / max(len(prediction), len(reference), 1)

    return sum(max(score(p, r) for r in refs) for p, refs in zip(predictions, references)) / len(predictions)


METRIC = Metric("char_accuracy", True, char_accuracy)
