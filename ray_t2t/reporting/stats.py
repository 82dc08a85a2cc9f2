"""The report's statistics: what a method's seeds say, and when a difference between methods is real.

    from ray_t2t.reporting.stats import Stat, welch, Crossings, best_of, break_even_interval

    Stat.of([51.0, 55.2, 49.8], 0.95)             # mean 52.0 ± 6.9 (Student-t, 2 degrees of freedom)
    welch([51.0, 55.2, 49.8], [70.1, 66.0, 72.3])  # difference, its interval and a two-sided p-value
    Crossings.of([51.0, None, 49.8], budgets=[60.0, 60.0, 60.0])   # reached 2/3, median 51.0

The rules, in the words the report prints them:
- A figure over a method's runs (one per seed) is their mean with a two-sided Student-t confidence
  interval; one run has no interval.
- A difference between two methods is significant when Welch's t-test (unequal variances) gives a
  two-sided p below alpha = 1 - confidence level. A method is named best only when it differs
  significantly, in its favour, from every other method compared with it (an intersection-union
  test: no correction for the number of rivals is needed).
- Time to target is censored: a run that never reached the target is known only to need more than
  what it spent. It is never dropped. Its group's mean needs every run to have reached; its median
  needs a majority, with a distribution-free interval from order statistics, whose true coverage is
  stated when the runs are too few for the asked level (3 runs: 75%). In a test a censored run
  counts at its budget, a lower bound, which favours it: a method is named fastest over it only
  when even that bound is significantly slower.
- Break-even N (after how many students a teacher has paid for itself) comes from the interval of
  the per-student saving: "never" only when the whole interval says there is no saving.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p for Student's t with df degrees of freedom."""
    from scipy.stats import t

    if not 0.0 < p < 1.0:
        raise ValueError(f"probability {p} is not in (0, 1)")
    return float(t.ppf(p, df))


def _finite(values: Iterable) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float | None, float | None]:
    """(mean, half-width of the two-sided Student-t confidence interval at `level`); the half-width is
    None for fewer than two values, and both are None for none."""
    if not values:
        return None, None
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_quantile((1.0 + level) / 2.0, n - 1) * sd / math.sqrt(n)


@dataclass(frozen=True)
class Stat:
    """A figure over a group's runs: mean, confidence half-width (None below two values), count."""

    mean: float | None
    half: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable, level: float) -> Stat:
        known = _finite(values)
        mean, half = mean_ci(known, level)
        return cls(mean, half, len(known))

    @property
    def low(self) -> float | None:
        return None if self.mean is None or self.half is None else self.mean - self.half

    @property
    def high(self) -> float | None:
        return None if self.mean is None or self.half is None else self.mean + self.half

    def plus(self, constant: float | None) -> Stat:
        """The same figure shifted by a constant (a one-off charge every run pays)."""
        if self.mean is None or constant is None:
            return Stat(None, None, self.n) if constant is None else self
        return Stat(self.mean + constant, self.half, self.n)

    def as_dict(self) -> dict:
        return {"mean": self.mean, "ci_half_width": self.half, "n": self.n}


# --------------------------------------------------------------------------------- Welch's t-test


@dataclass(frozen=True)
class Welch:
    """Welch's t-test of a against b: mean(a) - mean(b), its confidence interval, the two-sided p.
    Interval and p are None when either side has fewer than two values."""

    diff: float | None
    low: float | None
    high: float | None
    p: float | None
    df: float | None = None

    def significant(self, alpha: float) -> bool:
        return self.p is not None and self.p < alpha

    def as_dict(self) -> dict:
        return {"difference": self.diff, "ci_low": self.low, "ci_high": self.high, "p": self.p, "df": self.df}


def welch(a: Iterable, b: Iterable, level: float = 0.95) -> Welch:
    """Welch's unequal-variance t-test and the confidence interval of the difference of means at
    `level` (Welch-Satterthwaite degrees of freedom). Two sides without any spread are certain:
    p = 0 when their values differ, 1 when they agree."""
    from scipy.stats import t

    a, b = _finite(a), _finite(b)
    if not a or not b:
        return Welch(None, None, None, None)
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    diff = ma - mb
    if na < 2 or nb < 2:
        return Welch(diff, None, None, None)
    va = sum((x - ma) ** 2 for x in a) / (na - 1) / na
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1) / nb
    se2 = va + vb
    if se2 <= 1e-300 * max(1.0, diff * diff):
        return Welch(diff, diff, diff, 0.0 if diff != 0 else 1.0, math.inf)
    se = math.sqrt(se2)
    df = se2 * se2 / ((va * va / (na - 1) if va else 0.0) + (vb * vb / (nb - 1) if vb else 0.0))
    p = float(min(1.0, 2.0 * t.sf(abs(diff) / se, df)))
    half = t_quantile((1.0 + level) / 2.0, df) * se
    return Welch(diff, diff - half, diff + half, p, df)


# ------------------------------------------------------------------------ censored time to target


def binomial_coverage(n: int, j: int, k: int) -> float:
    """Probability that the order-statistic interval [x_(j), x_(k)] (1-based) of n samples holds the
    median: P(j <= B < k) for B ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(j, k)) / 2**n


def median_interval(n: int, level: float) -> tuple[int, int, float]:
    """(j, k, coverage): the narrowest symmetric order-statistic interval [x_(j), x_(k)] covering the
    median with probability >= level; [x_(1), x_(n)] with its lower coverage when n is too small."""
    best = (1, n, binomial_coverage(n, 1, n))
    for j in range(1, n // 2 + 1):
        k = n + 1 - j
        coverage = binomial_coverage(n, j, k)
        if coverage < level:
            break
        best = (j, k, coverage)
    return best


@dataclass(frozen=True)
class Crossings:
    """Time (or money) to target over a group's runs. values[i] is run i's crossing, None where the
    run never reached the target; budgets[i] is what that run spent without reaching it (a lower
    bound of its crossing)."""

    values: tuple[float | None, ...]
    budgets: tuple[float, ...]
    level: float = 0.95
    stat: Stat = field(init=False)

    def __post_init__(self) -> None:
        known = [v for v in self.values if v is not None]
        object.__setattr__(
            self, "stat", Stat.of(known, self.level) if self.all_reached else Stat(None, None, len(known))
        )

    @classmethod
    def of(cls, values: Iterable[float | None], budgets: Iterable[float | None], level: float = 0.95) -> Crossings:
        values = tuple(None if v is None or not math.isfinite(v) else float(v) for v in values)
        budgets = tuple(float(b) if isinstance(b, (int, float)) and math.isfinite(b) else math.inf for b in budgets)
        if len(values) != len(budgets):
            raise ValueError("one budget per run")
        return cls(values, budgets, level)

    @property
    def runs(self) -> int:
        return len(self.values)

    @property
    def reached(self) -> int:
        return sum(v is not None for v in self.values)

    @property
    def all_reached(self) -> bool:
        return self.runs > 0 and self.reached == self.runs

    @property
    def majority(self) -> bool:
        return 2 * self.reached > self.runs

    def bounds(self) -> list[float]:
        """Per run: the crossing, or for a run that never reached the target its budget."""
        return [v if v is not None else b for v, b in zip(self.values, self.budgets)]

    def _ordered(self) -> list[float]:
        return sorted(v if v is not None else math.inf for v in self.values)

    @property
    def median(self) -> float | None:
        """The median crossing, where a majority of runs reached the target (else None)."""
        if not self.majority:
            return None
        ordered, n = self._ordered(), self.runs
        return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2

    def median_interval(self) -> tuple[float | None, float | None, float]:
        """(low, high, coverage) of the median: order statistics x_(j), x_(k); high is None where
        x_(k) is a run that never reached the target (the median may then lie beyond the budget)."""
        if not self.majority:
            return None, None, 0.0
        j, k, coverage = median_interval(self.runs, self.level)
        ordered = self._ordered()
        high = ordered[k - 1]
        return ordered[j - 1], (None if math.isinf(high) else high), coverage

    def censored_beyond(self) -> float | None:
        """The smallest budget of the runs that never reached the target: their crossings lie beyond it."""
        budgets = [b for v, b in zip(self.values, self.budgets) if v is None]
        return min(budgets) if budgets else None

    def as_dict(self) -> dict:
        low, high, coverage = self.median_interval()
        return {
            "reached": self.reached,
            "runs": self.runs,
            "values": list(self.values),
            "budgets": list(self.budgets),
            "mean": self.stat.as_dict(),
            "median": self.median,
            "median_low": low,
            "median_high": high,
            "median_coverage": coverage if self.majority else None,
        }


# ------------------------------------------------------------------------------------ the winner


@dataclass
class Verdict:
    """Who is best on one figure. `leader` is best by point estimate among the eligible; `winner` is
    the leader when every test against the others is significant in its favour, else None and
    `reason` says why."""

    leader: str | None
    winner: str | None
    tests: dict[str, Welch] = field(default_factory=dict)  # leader against each other candidate
    reason: str = ""

    def as_dict(self) -> dict:
        return {
            "leader": self.leader,
            "winner": self.winner,
            "reason": self.reason,
            "tests": {name: test.as_dict() for name, test in self.tests.items()},
        }


def best_of(
    samples: dict[str, list[float]], lower_is_better: bool, level: float = 0.95, eligible: Iterable[str] | None = None
) -> Verdict:
    """The significant best of `samples` ({name: per-run values}). Only `eligible` names may lead (by
    default all); every name is tested against the leader (Welch, two-sided, alpha = 1 - level)."""
    alpha = 1.0 - level
    pool = {name: _finite(values) for name, values in samples.items()}
    pool = {name: values for name, values in pool.items() if values}
    allowed = [name for name in (pool if eligible is None else eligible) if name in pool]
    if not allowed:
        return Verdict(None, None, reason="no method qualifies")
    sign = 1.0 if lower_is_better else -1.0
    leader = min(allowed, key=lambda name: (sign * sum(pool[name]) / len(pool[name]), name))
    rivals = [name for name in pool if name != leader]
    if not rivals:
        return Verdict(leader, None, reason="nothing to compare it with")
    tests = {name: welch(pool[leader], pool[name], level) for name in rivals}
    untestable = [name for name, test in tests.items() if test.p is None]
    if untestable or len(pool[leader]) < 2:
        return Verdict(leader, None, tests, "fewer than two seeds: no test possible")
    unclear = [name for name, test in tests.items() if not (test.significant(alpha) and sign * test.diff < 0)]
    if unclear:
        return Verdict(leader, None, tests, "no significant difference from " + ", ".join(unclear))
    return Verdict(leader, leader, tests, "")


# ------------------------------------------------------------------------------------ break-even


def students_to_break_even(teacher: float, once: float, saving: float) -> int | None:
    """The smallest N with teacher + N x student < once + N x baseline, where saving = baseline -
    student per student; None (never) when a student saves nothing."""
    if saving <= 0:
        return None
    if teacher < once:
        return 1
    return math.floor((teacher - once) / saving) + 1


@dataclass(frozen=True)
class BreakEven:
    """Break-even N with its interval. low/high: the fewest and most students over the interval of
    the per-student saving (high None: never, at that end). outcome: "pays_off" (the saving is
    significantly positive), "never" (the whole interval says a student saves nothing), "uncertain",
    or "untested" (fewer than two runs on a side)."""

    point: int | None
    low: int | None
    high: int | None
    saving: Welch
    outcome: str

    def as_dict(self) -> dict:
        return {
            "point": self.point,
            "low": self.low,
            "high": self.high,
            "outcome": self.outcome,
            "saving": self.saving.as_dict(),
        }


def break_even_interval(
    teacher: float, once: float, student: list[float], baseline: list[float], level: float = 0.95
) -> BreakEven:
    """Break-even N of distilling (a one-off `teacher`, then `student` per student: one value per
    run) against a normal method (a one-off `once`, then `baseline` per student), with the interval
    from Welch's interval of the per-student saving baseline - student."""
    saving = welch(baseline, student, level)
    if saving.diff is None:
        return BreakEven(None, None, None, saving, "untested")
    point = students_to_break_even(teacher, once, saving.diff)
    if saving.low is None:
        return BreakEven(point, None, None, saving, "untested")
    low = students_to_break_even(teacher, once, saving.high)
    high = students_to_break_even(teacher, once, saving.low)
    if saving.low > 0:
        outcome = "pays_off"
    elif saving.high <= 0:
        outcome = "never"
    else:
        outcome = "uncertain"
    return BreakEven(point, low, high, saving, outcome)
