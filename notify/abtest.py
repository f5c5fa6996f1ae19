"""Whether two A/B variants' rates differ by more than chance: a two-sided two-proportion z-test
(pooled), with a plain-words verdict for the admin's variant comparison."""

from __future__ import annotations

import dataclasses
import math

#: The test's normal approximation needs at least this many expected successes and failures in
#: each variant (at the pooled rate); below it the verdict says the sample is too small.
MIN_EXPECTED = 5
#: Significance level of the verdict (95 %).
ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One variant's rate against another's.

    Attributes:
        rate_a, rate_b: successes / trials of each (None with no trials).
        z: the test statistic (b's rate above a's is positive), None when not computed.
        p_value: two-sided, in [0, 1], None when not computed.
        enough: the samples are large enough for the test (:data:`MIN_EXPECTED`).
        verdict: for people, e.g. ``"p = 0.012: significant at 95%"``, ``"p = 0.41: not
            significant at 95%"``, ``"too few to tell (needs 5 expected successes and failures
            in each variant)"``.
    """

    rate_a: float | None
    rate_b: float | None
    z: float | None
    p_value: float | None
    enough: bool
    verdict: str

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.enough and self.p_value < ALPHA


def compare(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> Comparison:
    """Two-proportion z-test of ``successes_b / trials_b`` against ``successes_a / trials_a``.

    Raises:
        ValueError: a negative count, or more successes than trials.
    """
    for successes, trials in ((successes_a, trials_a), (successes_b, trials_b)):
        if successes < 0 or trials < 0 or successes > trials:
            raise ValueError(f"{successes} successes of {trials} trials")
    rate_a = successes_a / trials_a if trials_a else None
    rate_b = successes_b / trials_b if trials_b else None
    if not trials_a or not trials_b:
        return Comparison(rate_a, rate_b, None, None, False, "no data to compare")
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    expected = min(n * p for n in (trials_a, trials_b) for p in (pooled, 1 - pooled))
    if expected < MIN_EXPECTED:
        return Comparison(rate_a, rate_b, None, None, False,
                          f"too few to tell (needs {MIN_EXPECTED} expected successes and failures in each variant)")
    error = math.sqrt(pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b))
    z = (rate_b - rate_a) / error
    p_value = math.erfc(abs(z) / math.sqrt(2))
    shown = "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"
    verdict = f"{shown}: {'significant' if p_value < ALPHA else 'not significant'} at {100 - ALPHA * 100:.0f}%"
    return Comparison(rate_a, rate_b, z, p_value, True, verdict)
