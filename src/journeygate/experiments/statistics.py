"""The statistics of an experiment report, from per-arm counters alone (pure Python).

* Conversion rate difference (arm - control): Newcombe's hybrid score interval (method 10 of
  Newcombe 1998), built from the two Wilson score intervals; sound for small counts and rates
  near 0, where the Wald interval undercovers.
* Relative lift (arm / control - 1): Wald interval with the delta-method standard error,
  ``(p1/p0) * sqrt((1-p1)/(n1 p1) + (1-p0)/(n0 p0))``.
* Revenue per visitor (every exposed visitor, zero when it bought nothing): Welch's
  unequal-variance t interval on the difference of means, with Welch-Satterthwaite degrees
  of freedom; means and variances come from the sum and the sum of squares of per-visitor
  revenue.
* Sample ratio mismatch: Pearson's chi-square goodness of fit of the exposed visitors per arm
  against the configured shares; p < 0.001 means assignment (or exposure logging) is broken.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist

SRM_ALPHA = 0.001
_NORMAL = NormalDist()


def z_value(confidence: float) -> float:
    """The two-sided normal quantile, 1.96 for 95%."""
    return _NORMAL.inv_cdf(0.5 + confidence / 2)


@dataclass(frozen=True, slots=True)
class Interval:
    estimate: float
    low: float
    high: float

    def as_json(self, digits: int = 6) -> dict[str, float]:
        return {
            "estimate": round(self.estimate, digits),
            "low": round(self.low, digits),
            "high": round(self.high, digits),
        }


def wilson(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval of a proportion."""
    if trials == 0:
        return Interval(0.0, 0.0, 1.0)
    z = z_value(confidence)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return Interval(p, max(centre - half, 0.0), min(centre + half, 1.0))


def rate_difference(
    successes: int, trials: int, control_successes: int, control_trials: int, confidence: float
) -> Interval:
    """Newcombe's hybrid score interval of ``p - p_control``."""
    arm = wilson(successes, trials, confidence)
    control = wilson(control_successes, control_trials, confidence)
    difference = arm.estimate - control.estimate
    low = difference - math.hypot(arm.estimate - arm.low, control.high - control.estimate)
    high = difference + math.hypot(arm.high - arm.estimate, control.estimate - control.low)
    return Interval(difference, low, high)


def relative_lift(
    successes: int, trials: int, control_successes: int, control_trials: int, confidence: float
) -> Interval | None:
    """``p / p_control - 1`` with a delta-method interval; None when a rate is zero."""
    if not (successes and trials and control_successes and control_trials):
        return None
    p1, p0 = successes / trials, control_successes / control_trials
    ratio = p1 / p0
    se = ratio * math.sqrt((1 - p1) / (trials * p1) + (1 - p0) / (control_trials * p0))
    half = z_value(confidence) * se
    return Interval(ratio - 1, ratio - 1 - half, ratio - 1 + half)


def mean_variance(total: float, squares: float, count: int) -> tuple[float, float]:
    """Mean and sample variance from a sum and a sum of squares."""
    if count == 0:
        return 0.0, 0.0
    mean = total / count
    if count == 1:
        return mean, 0.0
    return mean, max(squares - total * total / count, 0.0) / (count - 1)


def welch_difference(
    arm: tuple[float, float, int], control: tuple[float, float, int], confidence: float
) -> tuple[Interval, float] | None:
    """Welch's t interval of ``mean - mean_control`` from (sum, sum of squares, count) of
    each group, and its degrees of freedom; None without two visitors per group."""
    (m1, v1), n1 = mean_variance(*arm), arm[2]
    (m0, v0), n0 = mean_variance(*control), control[2]
    if n1 < 2 or n0 < 2:
        return None
    a, b = v1 / n1, v0 / n0
    se = math.sqrt(a + b)
    difference = m1 - m0
    if se == 0:
        return Interval(difference, difference, difference), math.inf
    df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n0 - 1))
    half = t_quantile(0.5 + confidence / 2, df) * se
    return Interval(difference, difference - half, difference + half), df


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function."""
    if math.isinf(df):
        return _NORMAL.cdf(t)
    tail = 0.5 * incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (bisection on :func:`t_cdf`), ``p`` in (0.5, 1)."""
    if math.isinf(df) or df > 1e7:
        return _NORMAL.inv_cdf(p)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low < 1e-12:
            break
    return (low + high) / 2


def chi_square_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for a chi-square distribution with integer ``dof`` (closed form)."""
    if statistic <= 0:
        return 1.0
    half = statistic / 2
    if dof % 2 == 0:
        term, total = 1.0, 1.0
        for i in range(1, dof // 2):
            term *= half / i
            total += term
        return min(math.exp(-half) * total, 1.0)
    root = math.sqrt(statistic)
    tail = 2 * (1 - _NORMAL.cdf(root))
    term, total = root, 0.0
    for i in range(1, (dof + 1) // 2):
        if i > 1:
            term *= statistic / (2 * i - 1)
        total += term
    return min(tail + math.sqrt(2 / math.pi) * math.exp(-half) * total, 1.0)


@dataclass(frozen=True, slots=True)
class SampleRatio:
    """The sample-ratio-mismatch check."""

    statistic: float
    p_value: float
    expected: Mapping[str, float]

    @property
    def mismatch(self) -> bool:
        return self.p_value < SRM_ALPHA


def sample_ratio(observed: Mapping[str, int], shares: Mapping[str, float]) -> SampleRatio | None:
    """Pearson's chi-square of the visitors per arm against the configured shares; None
    before any visitor was exposed."""
    total = sum(observed.get(arm, 0) for arm in shares)
    if total == 0 or len(shares) < 2:
        return None
    weight = sum(shares.values())
    expected = {arm: total * share / weight for arm, share in shares.items()}
    statistic = sum((observed.get(arm, 0) - count) ** 2 / count for arm, count in expected.items())
    return SampleRatio(statistic, chi_square_sf(statistic, len(shares) - 1), expected)
