"""Task metrics. Every metric takes predictions and, per example, one or more acceptable references.

    from ray_t2t.metrics import compute_metrics
    compute_metrics(["HH AH L OW"], [["HH AH L OW", "HH EH L OW"]], ["wer", "per"])
    # {'wer': 0.0, 'per': 0.0}

Tokens are whitespace-separated (a CMUdict phoneme, or a word of a sentence).

- exact_match: share of predictions equal to one of their references.
- wer: word error rate in the grapheme-to-phoneme sense, where each example is one word: the share of
  examples whose prediction matches none of the references (1 - exact_match).
- per: token error rate: total edit distance to the closest reference / total length of those
  references. On G2P this is the phoneme error rate; on sentences it is the ASR-style WER.
- bleu, chrf: sacrebleu's corpus BLEU and chrF (0-100), multiple references supported.
- rouge_l: ROUGE-L F1 (rouge-score), best over references, averaged over examples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ray_t2t import plugins

References = Sequence[Sequence[str]]


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (substitution, insertion, deletion cost 1)."""
    previous = list(range(len(b) + 1))
    for i, token_a in enumerate(a, start=1):
        current = [i]
        for j, token_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (token_a != token_b)))
        previous = current
    return previous[-1]


def _check(predictions: Sequence[str], references: References) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        raise ValueError("no predictions to score")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or not refs:
            raise ValueError(f"references[{i}] must be a non-empty list of strings")


def exact_match(predictions: Sequence[str], references: References) -> float:
    _check(predictions, references)
    hits = sum(any(pred.split() == ref.split() for ref in refs) for pred, refs in zip(predictions, references))
    return hits / len(predictions)


def wer(predictions: Sequence[str], references: References) -> float:
    return 1.0 - exact_match(predictions, references)


def per(predictions: Sequence[str], references: References) -> float:
    _check(predictions, references)
    errors = length = 0
    for pred, refs in zip(predictions, references):
        pred_tokens = pred.split()
        # The closest reference; on a tie the longer one, the usual convention for multi-reference PER.
        distance, ref_len = min((edit_distance(pred_tokens, ref.split()), -len(ref.split())) for ref in refs)
        errors += distance
        length += -ref_len
    return errors / length if length else float(errors > 0)


def _reference_streams(references: References) -> list[list[str | None]]:
    # sacrebleu wants one stream per reference position; examples with fewer references get None.
    width = max(len(refs) for refs in references)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


def bleu(predictions: Sequence[str], references: References) -> float:
    import sacrebleu

    _check(predictions, references)
    return sacrebleu.corpus_bleu(list(predictions), _reference_streams(references)).score


def chrf(predictions: Sequence[str], references: References) -> float:
    import sacrebleu

    _check(predictions, references)
    return sacrebleu.corpus_chrf(list(predictions), _reference_streams(references)).score


def rouge_l(predictions: Sequence[str], references: References) -> float:
    from rouge_score import rouge_scorer

    _check(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    total = sum(scorer.score_multi(list(refs), pred)["rougeL"].fmeasure for pred, refs in zip(predictions, references))
    return total / len(predictions)


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    compute: Callable[[Sequence[str], References], float]


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("wer", False, wer),
        Metric("per", False, per),
        Metric("exact_match", True, exact_match),
        Metric("bleu", True, bleu),
        Metric("chrf", True, chrf),
        Metric("rouge_l", True, rouge_l),
    )
}


for _name, _metric, _where in plugins.load("ray_t2t.metrics", builtin=set(METRICS)):
    if not isinstance(_metric, Metric) or _metric.name != _name:
        raise plugins.PluginError(f"{_where}: a metric is a ray_t2t.metrics.Metric named {_name!r}")
    METRICS[_name] = _metric


def compute_metrics(
    predictions: Sequence[str], references: References, names: Sequence[str] = tuple(METRICS)
) -> dict[str, float]:
    """{name: value} for the named metrics. Raises KeyError for an unknown name, ValueError for
    mismatched or empty inputs."""
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}. Valid metrics: {', '.join(METRICS)}")
    return {name: METRICS[name].compute(predictions, references) for name in names}
