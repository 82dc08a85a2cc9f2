"""The benchmark suite's pure pieces (benchmarks/suite.py, benchmarks/run_all.py): Ray-free, seconds."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.suite import format_table, padding_share, padding_waste, verdict  # noqa: E402


def test_padding_share_encoder_decoder_pads_sources_and_targets_apart():
    sources, targets = [3, 5, 4], [2, 2, 6]
    share = padding_share([[0, 1], [2]], sources, targets)
    # batch [0, 1]: sources 3+5 of 2x5, targets 2+2 of 2x2; batch [2]: 4 + 6, no padding
    assert share["real_tokens"] == 3 + 5 + 2 + 2 + 4 + 6
    assert share["padded_tokens"] == 2 * 5 + 2 * 2 + 4 + 6
    assert share["pad_share"] == pytest.approx(2 / 24)


def test_padding_share_decoder_only_pads_one_sequence():
    share = padding_share([[0, 1]], [3, 5], [4, 1], encoder_decoder=False)
    assert share["real_tokens"] == 13 and share["padded_tokens"] == 2 * 7
    assert share["pad_share"] == pytest.approx(1 / 14)


def test_padding_share_of_equal_lengths_is_zero():
    assert padding_share([[0, 1, 2]], [4, 4, 4], [3, 3, 3])["pad_share"] == 0


def test_padding_waste_grouping_cuts_padding_and_covers_the_epoch():
    import random

    rng = random.Random(0)
    sources = [rng.randint(2, 20) for _ in range(4096)]
    targets = [s + rng.randint(-1, 1) for s in sources]  # correlated, as a word's letters and phonemes
    waste = padding_waste(sources, targets, batch_size=16)
    grouped, ungrouped = waste["grouped"], waste["ungrouped"]
    # one epoch of 256 full batches either way: every example once
    assert grouped["real_tokens"] == ungrouped["real_tokens"] == sum(sources) + sum(targets)
    assert grouped["pad_share"] < ungrouped["pad_share"] / 2
    two_ranks = padding_waste(sources, targets, batch_size=8, world_size=2, steps=10)
    assert two_ranks["grouped"]["real_tokens"] > 0


def test_verdicts_and_table():
    assert verdict(0.96, ">=", 0.95) == "pass" and verdict(0.9, ">=", 0.95) == "FAIL"
    assert verdict(80, "<=", 100) == "pass" and verdict(None, "<=", 100) == "n/a"
    table = format_table([{"figure": "a", "value": "1", "ratio": "0.5", "goal": ">= 0.9", "result": "FAIL"}])
    header, rule, row = table.splitlines()
    assert header.split() == ["figure", "value", "baseline", "ratio", "goal", "result"]
    assert "—" in row and row.rstrip().endswith("FAIL")


def test_run_all_rows_judge_each_figure():
    from benchmarks.run_all import rows_of

    results = {
        "train": {"pytorch_tokens_per_s": [100.0, 110.0], "ray_t2t_tokens_per_s": 100.0, "ratio": 100 / 105,
                  "startup_s": 12.0, "teardown_s": 1.0, "tokens_per_step": 10.0,
                  "two_workers_tokens_per_s": 150.0, "scaling_efficiency": 0.75},
        "padding": {"grouped": {"pad_share": 0.05}, "ungrouped": {"pad_share": 0.4}},
    }
    rows = {row["key"]: row for row in rows_of(results, {"max_steps": 600}) if row["key"]}
    assert rows["train_ratio"]["result"] == "pass"
    # 600 steps x 10 tokens at 100 tokens/s = 60 s of training; 13 s of overhead is 21.7% of it
    assert rows["overhead_share"]["judged"] == pytest.approx(13 / 60) and rows["overhead_share"]["result"] == "FAIL"
    assert rows["scaling_efficiency"]["result"] == "FAIL"
    assert rows["padding_grouped"]["result"] == "pass" and rows["padding_grouped"]["ratio"] == "0.125"
