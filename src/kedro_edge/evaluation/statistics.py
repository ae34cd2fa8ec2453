"""A metric with its uncertainty: intervals for one model, paired comparisons for two.

An accuracy figure without n and an interval cannot tell a real loss from the luck of the
test draw. For one model: the Wilson score interval (good coverage at accuracies near 100%,
where the normal approximation collapses). For two models on the *same* images the images
are the pairing: only the discordant ones (one right, the other wrong) carry information, so

- the exact McNemar test is a two-sided binomial test on those discordant counts, and
- the paired bootstrap resamples images, i.e. draws the four (right/wrong x right/wrong) cell
  counts from a multinomial: the same distribution as resampling rows, without the rows.

Differences are reported in percentage points, ``candidate - reference`` (negative = a drop).

Any other per-sample score (mIoU, an absolute error, the user's metric: ``evaluation.metrics``)
gets a t interval of its mean for one model and, for two, the paired bootstrap of the per-sample
differences, whose p-value is read from the same resamples (twice the smaller share of resampled
mean differences on either side of 0: the interval excludes 0 exactly when p < 1 - confidence, so
a warning and its interval never disagree); differences are then in the metric's reported units
(``unit``), and ``drop_points`` follows its direction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Accuracy:
    """``correct`` of ``n`` right, as a share with a ``confidence`` interval."""

    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    confidence: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PairedComparison:
    """Candidate vs reference on the same ``n`` images; ``diff_points`` < 0 is a loss.

    ``only_reference_right`` / ``only_candidate_right`` are the discordant counts McNemar uses.
    """

    n: int
    reference_accuracy: float
    candidate_accuracy: float
    diff_points: float
    ci_low_points: float
    ci_high_points: float
    p_value: float
    only_reference_right: int  # 0/1 scores: right for one model only; others: better for one only
    only_candidate_right: int
    confidence: float
    test: str = "McNemar"  # of ``p_value``: exact McNemar (0/1 scores) or the paired bootstrap
    higher_is_better: bool = True
    unit: str = "points"  # of the differences: points for shares, else the metric's own

    @property
    def drop_points(self) -> float:
        """The loss in the metric's direction (a rise of an error is a drop)."""
        return -self.diff_points if self.higher_is_better else self.diff_points

    @property
    def drop_interval(self) -> tuple[float, float]:
        """The confidence interval of ``drop_points``, low to high."""
        if self.higher_is_better:
            return -self.ci_high_points, -self.ci_low_points
        return self.ci_low_points, self.ci_high_points

    def to_dict(self) -> dict:
        """As JSON; ``test``, ``higher_is_better`` and ``unit`` only when not top-1's (so records
        written before other metrics existed read and write back the same)."""
        out = asdict(self)
        for key, default in (("test", "McNemar"), ("higher_is_better", True), ("unit", "points")):
            if out[key] == default:
                del out[key]
        return out

    to_json = to_dict

    def describe(self) -> str:
        return describe(self.to_dict())


def describe(comparison: dict) -> str:
    """A paired comparison (``PairedComparison.to_dict()``) in one line, e.g.
    '-0.42 points [-0.71, -0.13] (paired 95% CI, McNemar p=0.006, n=5200)'."""
    pct = round(100 * comparison["confidence"])
    unit = comparison.get("unit", "points")
    f = ".2f" if unit == "points" else ".4g"
    return (
        f"{comparison['diff_points']:+{f}}{' ' + unit if unit else ''} [{comparison['ci_low_points']:+{f}}, "
        f"{comparison['ci_high_points']:+{f}}] (paired {pct}% CI, {comparison.get('test', 'McNemar')} "
        f"p={comparison['p_value']:.3g}, n={comparison['n']})"
    )


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``correct / n``."""
    if n <= 0:
        raise ValueError("n must be positive")
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = correct / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def accuracy(correct: np.ndarray, confidence: float = 0.95) -> Accuracy:
    """Accuracy of a boolean per-image ``correct`` vector, with its Wilson interval."""
    correct = np.asarray(correct, dtype=bool)
    n, k = correct.size, int(correct.sum())
    low, high = wilson_interval(k, n, confidence)
    return Accuracy(n, k, k / n, low, high, confidence)


def mcnemar_exact(only_reference_right: int, only_candidate_right: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of the discordant pairs against 1/2."""
    discordant = only_reference_right + only_candidate_right
    if discordant == 0:
        return 1.0
    return float(stats.binomtest(only_candidate_right, discordant, 0.5).pvalue)


def paired_bootstrap_interval(
    counts: tuple[int, int, int, int], confidence: float = 0.95, resamples: int = 20000, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the accuracy difference (candidate - reference), as a share.

    ``counts`` = (both right, only reference right, only candidate right, both wrong).
    Resampling n images with replacement is a multinomial draw of these four counts.
    """
    counts_arr = np.asarray(counts, dtype=np.int64)
    n = int(counts_arr.sum())
    draws = np.random.default_rng(seed).multinomial(n, counts_arr / n, size=resamples)
    diffs = (draws[:, 2] - draws[:, 1]) / n
    tail = (1 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return float(low), float(high)


def paired(
    reference_correct: np.ndarray,
    candidate_correct: np.ndarray,
    confidence: float = 0.95,
    resamples: int = 20000,
    seed: int = 0,
) -> PairedComparison:
    """Compare two models' per-image correctness on the same images."""
    ref = np.asarray(reference_correct, dtype=bool)
    cand = np.asarray(candidate_correct, dtype=bool)
    if ref.shape != cand.shape or ref.ndim != 1 or ref.size == 0:
        raise ValueError(
            f"paired comparison needs two equal-length 1-D vectors, got {ref.shape} and {cand.shape}"
        )
    n = ref.size
    counts = (
        int((ref & cand).sum()),
        int((ref & ~cand).sum()),
        int((~ref & cand).sum()),
        int((~ref & ~cand).sum()),
    )
    low, high = paired_bootstrap_interval(counts, confidence, resamples, seed)
    return PairedComparison(
        n=n,
        reference_accuracy=float(ref.mean()),
        candidate_accuracy=float(cand.mean()),
        diff_points=100 * (counts[2] - counts[1]) / n,
        ci_low_points=100 * low,
        ci_high_points=100 * high,
        p_value=mcnemar_exact(counts[1], counts[2]),
        only_reference_right=counts[1],
        only_candidate_right=counts[2],
        confidence=confidence,
    )


def mean_interval(scores: np.ndarray, binary: bool, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of per-sample ``scores``: Wilson for 0/1 scores, else a t interval."""
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.size
    if binary:
        low, high = wilson_interval(int(round(scores.sum())), n, confidence)
        return float(scores.mean()), low, high
    half = (
        stats.t.ppf(0.5 + confidence / 2, max(n - 1, 1)) * scores.std(ddof=1) / np.sqrt(n) if n > 1 else 0.0
    )
    return float(scores.mean()), float(scores.mean() - half), float(scores.mean() + half)


def paired_scores(
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    binary: bool,
    higher_is_better: bool = True,
    scale: float = 100.0,
    unit: str = "points",
    confidence: float = 0.95,
    resamples: int = 20000,
    seed: int = 0,
) -> PairedComparison:
    """Two models' per-sample scores on the same samples; differences are ``scale`` x the mean's.

    0/1 scores keep ``paired`` (McNemar and the multinomial bootstrap); other scores resample
    samples (the paired bootstrap of the mean difference, drawn in chunks so memory stays small),
    and the two-sided p-value is the bootstrap's own (at least 1 / ``resamples``).
    """
    ref, cand = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    if binary:
        c = paired(ref > 0.5, cand > 0.5, confidence, resamples, seed)
        k = scale / 100
        low, high = k * c.ci_low_points, k * c.ci_high_points
        return replace(
            c, diff_points=k * c.diff_points, ci_low_points=low, ci_high_points=high,
            higher_is_better=higher_is_better, unit=unit,
        )  # fmt: skip
    if ref.shape != cand.shape or ref.ndim != 1 or ref.size == 0:
        raise ValueError(
            f"paired comparison needs two equal-length 1-D vectors, got {ref.shape} and {cand.shape}"
        )
    diff = cand - ref
    n = diff.size
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)
    means = np.concatenate(
        [diff[rng.integers(0, n, (min(chunk, resamples - i), n))].mean(1) for i in range(0, resamples, chunk)]
    )
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    p = 1.0
    if np.any(diff != 0):
        p = float(min(1.0, max(2 * min((means <= 0).mean(), (means >= 0).mean()), 1 / len(means))))
    cand_better = int((diff > 0).sum() if higher_is_better else (diff < 0).sum())
    ref_better = int((diff < 0).sum() if higher_is_better else (diff > 0).sum())
    return PairedComparison(
        n=n,
        reference_accuracy=float(ref.mean()),
        candidate_accuracy=float(cand.mean()),
        diff_points=float(scale * diff.mean()),
        ci_low_points=float(scale * low),
        ci_high_points=float(scale * high),
        p_value=p,
        only_reference_right=ref_better,
        only_candidate_right=cand_better,
        confidence=confidence,
        test="bootstrap",
        higher_is_better=higher_is_better,
        unit=unit,
    )


def paired_half_width(n: int, discordance: float, confidence: float = 0.95) -> float:
    """Half-width, in points, of the paired interval of an accuracy difference on ``n`` images of
    which a share ``discordance`` is right for one model only (normal approximation at no
    difference: the variance of ``(c - b) / n`` is ``(b + c) / n**2``)."""
    z = stats.norm.ppf(0.5 + confidence / 2)
    return float(100 * z * np.sqrt(discordance / n))


def images_needed(budget_points: float, discordance: float, confidence: float = 0.95) -> int:
    """Images for the paired interval's half-width to be ``budget_points``: the fewest with which a
    non-inferiority gate at that budget can pass a model that loses nothing."""
    z = stats.norm.ppf(0.5 + confidence / 2)
    return int(np.ceil(z**2 * discordance / (budget_points / 100) ** 2))
