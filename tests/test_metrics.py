"""Metrics against hand-computed values and the reference libraries' own outputs."""

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from ray_t2t.metrics import METRICS, compute_metrics, edit_distance, exact_match, per, wer


@pytest.mark.parametrize(
    "a, b, distance",
    [
        ("", "", 0),
        ("a b c", "a b c", 0),
        ("a b c", "", 3),
        ("", "x y", 2),
        ("k ae t", "k ah t", 1),  # substitution
        ("k ae t s", "k ae t", 1),  # insertion
        ("s ih t ih ng", "k ih t ih n", 2),
        ("a b c d", "b c d a", 2),
    ],
)
def test_edit_distance_by_hand(a, b, distance):
    assert edit_distance(a.split(), b.split()) == distance
    assert edit_distance(b.split(), a.split()) == distance


def test_g2p_wer_counts_a_word_right_if_it_matches_any_pronunciation():
    predictions = ["T AH M EY T OW", "T AH M AA T OW", "T AH M AE T OW", "R EH D"]
    references = [["T AH M EY T OW", "T AH M AA T OW"]] * 3 + [["R IY D", "R EH D"]]
    # third prediction matches neither pronunciation of "tomato"
    assert wer(predictions, references) == pytest.approx(1 / 4)
    assert exact_match(predictions, references) == pytest.approx(3 / 4)


def test_per_uses_the_closest_reference():
    predictions = ["T AH M AE T OW", "R D", "HH AH L OW W"]
    references = [["T AH M EY T OW", "T AH M AA T OW"], ["R IY D"], ["HH AH L OW"]]
    # 1 substitution of 6, 1 deletion of 3, 1 insertion against 4
    assert per(predictions, references) == pytest.approx((1 + 1 + 1) / (6 + 3 + 4))


def test_whitespace_does_not_count():
    assert wer(["  HH  AH L OW "], [["HH AH L OW"]]) == 0.0
    assert per(["HH AH L OW"], [["HH  AH L  OW"]]) == 0.0


HYPS = ["the cat sat on the mat", "a quick brown fox", "hello there general kenobi"]
REFS = [["the cat sat on a mat", "there is a cat on the mat"], ["the quick brown fox"], ["hello there general kenobi"]]


def test_bleu_and_chrf_match_sacrebleu():
    streams = [[r[0] for r in REFS], [r[1] if len(r) > 1 else None for r in REFS]]
    assert compute_metrics(HYPS, REFS, ["bleu"])["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, streams).score)
    assert compute_metrics(HYPS, REFS, ["chrf"])["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, streams).score)
    assert compute_metrics(["a b c d"], [["a b c d"]], ["bleu"])["bleu"] == pytest.approx(100.0)


def test_rouge_l_matches_rouge_score_best_reference():
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = sum(max(scorer.score(r, h)["rougeL"].fmeasure for r in refs) for h, refs in zip(HYPS, REFS)) / 3
    assert compute_metrics(HYPS, REFS, ["rouge_l"])["rouge_l"] == pytest.approx(expected)
    # hand value: LCS("a b", "a c b") = 2, precision 1, recall 2/3 -> F1 0.8
    assert compute_metrics(["a b"], [["a c b"]], ["rouge_l"])["rouge_l"] == pytest.approx(0.8)


def test_all_metrics_and_directions():
    values = compute_metrics(HYPS, REFS)
    assert set(values) == set(METRICS)
    assert not METRICS["wer"].higher_is_better and METRICS["bleu"].higher_is_better


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="2 predictions but 1 reference lists"):
        wer(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="no predictions"):
        per([], [])
    with pytest.raises(ValueError, match=r"references\[0\] must be a non-empty list"):
        wer(["a"], ["a"])
    with pytest.raises(KeyError, match="unknown metric"):
        compute_metrics(["a"], [["a"]], ["accuracy"])
