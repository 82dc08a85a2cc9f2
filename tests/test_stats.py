"""The report's statistics on hand-computed numbers: intervals, Welch's test, censored time to target,
the significance rule for naming a winner, and break-even N with its interval. Ray-free."""

import math

import pytest
from scipy import stats as scipy_stats

from ray_t2t.ledger import crossing
from ray_t2t.reporting.stats import (
    Crossings,
    Stat,
    best_of,
    binomial_coverage,
    break_even_interval,
    median_interval,
    students_to_break_even,
    welch,
)

# ------------------------------------------------------------------------------------- intervals


def test_stat_is_the_mean_with_its_student_t_interval():
    stat = Stat.of([51.0, 55.2, 49.8], 0.95)
    sd = math.sqrt(((51 - 52) ** 2 + (55.2 - 52) ** 2 + (49.8 - 52) ** 2) / 2)  # 2.8284
    assert stat.mean == pytest.approx(52.0)
    assert stat.half == pytest.approx(4.302652729911275 * sd / math.sqrt(3))  # t(0.975, 2)
    assert (stat.low, stat.high) == pytest.approx((52.0 - stat.half, 52.0 + stat.half))
    assert Stat.of([3.0], 0.95).half is None and Stat.of([], 0.95).mean is None
    assert Stat.of([1.0, None, float("nan"), 3.0], 0.95).n == 2  # unknown values are not figures


# -------------------------------------------------------------------------------------- Welch


def test_welch_by_hand():
    # a: mean 2, var 1; b: mean 5, var 4; n 3 each. se^2 = 1/3 + 4/3 = 5/3;
    # df = (5/3)^2 / ((1/3)^2 / 2 + (4/3)^2 / 2) = (25/9) / (17/18) = 50/17
    test = welch([1, 2, 3], [3, 5, 7], 0.95)
    se = math.sqrt(5 / 3)
    df = 50 / 17
    assert test.diff == -3 and test.df == pytest.approx(df)
    assert test.p == pytest.approx(2 * scipy_stats.t.sf(3 / se, df))
    half = scipy_stats.t.ppf(0.975, df) * se
    assert (test.low, test.high) == pytest.approx((-3 - half, -3 + half))


@pytest.mark.parametrize(
    "a, b",
    [
        ([10.1, 11.9, 10.7, 11.2], [12.5, 13.9, 12.2]),
        ([0.91, 0.88, 0.95], [0.74, 0.79, 0.7]),
        ([5.0, 5.1], [4.0, 9.0, 2.0, 7.5, 3.3]),
    ],
)
def test_welch_agrees_with_scipy(a, b):
    ours = welch(a, b, 0.95)
    theirs = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert ours.p == pytest.approx(theirs.pvalue, rel=1e-9)
    interval = theirs.confidence_interval(0.95)
    assert (ours.low, ours.high) == pytest.approx((interval.low, interval.high), rel=1e-9)


def test_welch_needs_two_values_a_side_and_treats_no_spread_as_certain():
    assert welch([1.0], [2.0, 3.0]).p is None and welch([1.0], [2.0, 3.0]).diff == -1.5
    assert welch([], [1.0]).diff is None
    assert welch([2.0, 2.0], [3.0, 3.0]).p == 0.0  # both exact and different
    assert welch([2.0, 2.0], [2.0, 2.0]).p == 1.0


# ------------------------------------------------------------------- time to target: interpolation


def test_crossing_is_interpolated_between_the_evaluations_around_it():
    curve = [
        {"step": 0, "wall_s": 0.0, "device_s": 0.0, "cost": 0.0, "tokens": 0, "val_wer": 1.0},
        {"step": 100, "wall_s": 10.0, "device_s": 20.0, "cost": 0.2, "tokens": 1000, "val_wer": 0.8},
        {"step": 200, "wall_s": 20.0, "device_s": 40.0, "cost": 0.4, "tokens": 2000, "val_wer": 0.6},
    ]
    hit = crossing(curve, "val_wer", "<=", 0.7)  # halfway from 0.8 (step 100) to 0.6 (step 200)
    assert hit == pytest.approx(
        {"step": 150, "wall_s": 15.0, "device_s": 30.0, "cost": 0.3, "tokens": 1500, "energy_j": None}
    )
    assert crossing(curve, "val_wer", "<=", 0.8)["step"] == 100  # met exactly at an evaluation
    assert crossing(curve, "val_wer", "<=", 0.65)["wall_s"] == pytest.approx(17.5)
    assert crossing(curve, "val_wer", "<=", 0.5) is None
    assert crossing(curve, "val_wer", "<=", 1.0)["step"] == 0  # met at the first evaluation: nothing before it
    higher = [{"step": 0, "wall_s": 0.0, "val_bleu": 10.0}, {"step": 10, "wall_s": 4.0, "val_bleu": 30.0}]
    assert crossing(higher, "val_bleu", ">=", 25.0)["wall_s"] == pytest.approx(3.0)


# -------------------------------------------------------------------------- time to target: censoring


def test_order_statistic_interval_of_the_median():
    assert binomial_coverage(3, 1, 3) == pytest.approx(0.75)
    assert median_interval(3, 0.95) == (1, 3, pytest.approx(0.75))  # 3 seeds cannot give 95%: said so
    assert median_interval(10, 0.95) == (2, 9, pytest.approx(1 - 2 * 11 / 1024))  # 0.9785
    assert median_interval(6, 0.95) == (1, 6, pytest.approx(1 - 2 / 64))


def test_runs_that_never_reached_the_target_are_censored_not_dropped():
    c = Crossings.of([51.0, None, 49.8], [60.0, 61.0, 58.0], 0.95)
    assert (c.reached, c.runs, c.all_reached, c.majority) == (2, 3, False, True)
    assert c.stat.mean is None  # no mean over the runs that happened to reach it
    assert c.median == 51.0  # sorted 49.8, 51.0, (beyond 61)
    low, high, coverage = c.median_interval()
    assert (low, high, coverage) == (49.8, None, pytest.approx(0.75))  # the upper end is a censored run
    assert c.censored_beyond() == 61.0
    assert c.bounds() == [51.0, 61.0, 49.8]  # in a test the censored run counts at what it spent
    minority = Crossings.of([40.0, None, None], [60.0, 60.0, 60.0])
    assert minority.median is None and minority.reached == 1 and minority.stat.mean is None
    everyone = Crossings.of([50.0, 52.0, 54.0], [60.0, 60.0, 60.0])
    assert everyone.stat.mean == 52.0 and everyone.stat.half == pytest.approx(4.302652729911275 * 2 / math.sqrt(3))
    assert everyone.median == 52.0 and everyone.median_interval() == (50.0, 54.0, pytest.approx(0.75))


# ------------------------------------------------------------------------------ significance rule


def test_a_winner_is_named_only_when_it_differs_significantly_from_every_other():
    clear = best_of({"a": [10.0, 11.0, 12.0], "b": [20.0, 21.0, 22.0], "c": [30.0, 29.0, 33.0]}, lower_is_better=True)
    assert clear.winner == "a" and clear.leader == "a" and set(clear.tests) == {"b", "c"}
    assert all(test.p < 0.05 for test in clear.tests.values())
    close = best_of({"a": [10.0, 15.0, 20.0], "b": [12.0, 16.0, 21.0], "c": [40.0, 41.0, 42.0]}, lower_is_better=True)
    assert close.leader == "a" and close.winner is None  # the leader by point estimate, but not separable from b
    assert "no significant difference from b" == close.reason
    higher = best_of({"a": [0.50, 0.52, 0.51], "b": [0.70, 0.71, 0.69]}, lower_is_better=False)
    assert higher.winner == "b"


def test_no_winner_from_one_seed_or_from_a_method_that_did_not_qualify():
    one_seed = best_of({"a": [10.0], "b": [20.0]}, lower_is_better=True)
    assert one_seed.leader == "a" and one_seed.winner is None and "fewer than two seeds" in one_seed.reason
    # a is lower but not eligible (e.g. not every run reached the target): b leads, and is not better than a
    guarded = best_of({"a": [5.0, 6.0, 5.5], "b": [10.0, 11.0, 12.0]}, lower_is_better=True, eligible=["b"])
    assert guarded.leader == "b" and guarded.winner is None
    assert best_of({"a": [1.0, 2.0]}, lower_is_better=True).winner is None  # nothing to compare with


def test_alpha_follows_the_confidence_level():
    samples = {"a": [10.0, 11.0, 12.5], "b": [12.0, 13.4, 14.0]}  # Welch p between 0.05 and 0.2
    p = welch(samples["a"], samples["b"]).p
    assert 0.05 < p < 0.2
    assert best_of(samples, True, level=0.95).winner is None
    assert best_of(samples, True, level=0.80).winner == "a"


# ------------------------------------------------------------------------------------ break-even


def test_students_to_break_even():
    assert students_to_break_even(10.0, 0.0, 2.0) == 6  # 10 + 5 x 1 = 15 is not below 5 x 3 = 15
    assert students_to_break_even(3.5, 0.0, 0.31) == 12
    assert students_to_break_even(0.0, 0.0, 1.0) == 1
    assert students_to_break_even(10.0, 4.0, 2.0) == 4  # the baseline's one-off counts once on its side
    assert students_to_break_even(2.0, 4.0, 2.0) == 1
    assert students_to_break_even(5.0, 0.0, 0.0) is None and students_to_break_even(5.0, 0.0, -1.0) is None


def test_break_even_interval_by_hand():
    # saving = baseline - student: mean 2, each side sd 0.2, n 3: se = sqrt(0.08 / 3), df = 4
    result = break_even_interval(10.0, 0.0, [1.0, 1.2, 0.8], [3.0, 3.2, 2.8], 0.95)
    half = scipy_stats.t.ppf(0.975, 4) * math.sqrt(0.08 / 3)  # 0.4533
    assert result.saving.diff == pytest.approx(2.0) and result.saving.high == pytest.approx(2 + half)
    assert result.outcome == "pays_off"
    assert result.point == 6  # floor(10 / 2) + 1
    assert result.low == math.floor(10 / (2 + half)) + 1 == 5
    assert result.high == math.floor(10 / (2 - half)) + 1 == 7


def test_never_only_when_the_whole_interval_says_so():
    never = break_even_interval(10.0, 0.0, [3.0, 3.1, 2.9], [1.0, 1.1, 0.9], 0.95)
    assert never.outcome == "never" and (never.point, never.low, never.high) == (None, None, None)
    # a saving whose interval straddles zero: from some N at best, never at worst; not "never"
    unsure = break_even_interval(10.0, 0.0, [1.0, 2.5, 0.5], [1.5, 2.0, 2.6], 0.95)
    assert unsure.saving.low < 0 < unsure.saving.high
    assert unsure.outcome == "uncertain" and unsure.high is None and unsure.low is not None
    single = break_even_interval(10.0, 0.0, [1.0], [3.0], 0.95)
    assert single.outcome == "untested" and single.point == 6 and single.low is None
