"""The statistics under every verdict: Wilson intervals of rates over seeds, and the rule that calls a verdict
only where its interval decides."""
from __future__ import annotations

from scipy.stats import binomtest

CONFIDENCE = 0.95


def wilson(k: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a rate k/n."""
    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)


def decide(k: int, n: int) -> bool | None:
    """Whether an outcome seen in k of n seeds happens in most seeds: True when the 95 % Wilson interval of
    k/n lies wholly above ½, False when wholly below, None (undecided) when it straddles ½ or n = 0. At 10
    seeds 9/10 and 10/10 decide yes, 0/10 and 1/10 decide no; at 5 seeds only 5/5 and 0/5 decide; at 3
    seeds nothing decides."""
    if n == 0:
        return None
    low, high = wilson(k, n)
    return True if low > 0.5 else False if high < 0.5 else None


def undecided(k: int, n: int) -> str:
    """How a verdict its seeds do not decide reads: `undecided (k/n)`."""
    return f"undecided ({int(k)}/{int(n)})"
