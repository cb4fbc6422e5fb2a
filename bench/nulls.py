"""Key-randomization tests: the p-value of an ownership check, valid under the null that the suspect was not
derived from a model marked with the key under test.

The null: K other keys drawn by the defense's own key procedure (`Defense.null_key`), scored on the same
suspect by the same statistic (`Defense.score_many`). A suspect that was not derived from the key's marked
model cannot tell the key under test from the K others, so the key's rank among the K + 1 scores is uniform
and p = (1 + #{null scores ≥ the key's}) / (K + 1) is valid: P(p ≤ α) ≤ α for every α, exactly α at the
multiples of 1/(K + 1) for a continuous statistic; ties count against the key, so a discrete statistic makes
the test conservative. The smallest p-value is 1 / (K + 1) — the resolution that decides which α a run may be
read at.

Sequential stopping (Besag and Clifford, Biometrika 1991): nulls are scored in order, and the test stops as
soon as h of them reach the key's score, with p = h / (nulls scored). The p-value stays valid at every level.
h is tied to the level α the run reads its tests at (`stop_count`): h = ⌊αK⌋ + 1, so that after h exceedances
neither the stopped p = h / scored ≥ h / K nor the full test's p can reach α, and every verdict at α — and at
every finer level — is the one the full test gives. At α = 0.01 and K = 99, h = 1: a test stops at the first null
that reaches the key. Read at a coarser level than the run's, the p-values stay valid, but their verdicts can
differ from the full test's (either way). Nulls are scored in growing batches (2h, 4h, …, the rest): under the null most tests
stop within the first few; a key that beats them all needs all K."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from torch import nn

from bench.protocols import Context, Defense, Key, WmbenchError



@dataclass(frozen=True)
class KeyTest:
    """The outcome of one key-randomization test of a key on a suspect."""

    p_value: float
    score: float  # the key's own statistic on the suspect
    exceed: int  # null keys scoring at least as high, among those scored
    scored: int  # null keys scored (`null_size` unless the test stopped early)
    null_size: int  # K, the null keys available

    @property
    def smallest(self) -> bool:
        """The key scores above every one of the K null keys (p = 1 / (K + 1)): it identifies the suspect."""
        return self.exceed == 0 and self.scored == self.null_size


def smallest_p(null_size: int) -> float:
    """The smallest p-value K null keys can give: 1 / (K + 1)."""
    return 1.0 / (null_size + 1)


def check_alpha(alpha: float, null_size: int) -> None:
    """Refuse, in one line, a level α finer than K null keys resolve (α < 1 / (K + 1))."""
    if not 0 < alpha < 1:
        raise WmbenchError(f"--alpha must lie in (0, 1), got {alpha!r}")
    if alpha < smallest_p(null_size) * (1 - 1e-9):
        raise WmbenchError(f"--alpha {alpha:g} is finer than the null resolves: {null_size} null keys give p-values no "
                           f"smaller than 1/{null_size + 1} = {smallest_p(null_size):.4g}; ask for α ≥ that, or a profile "
                           f"with more `null_keys`")


def stop_count(alpha: float, null_size: int) -> int:
    """Besag–Clifford's h for tests read at `alpha` against K = `null_size` null keys: ⌊αK⌋ + 1, the fewest
    exceedances after which neither the stopped p (h / scored ≥ h / K) nor the full test's p can reach α."""
    return math.floor(alpha * null_size + 1e-9) + 1


def key_test(score: float, null_scores: Callable[[int, int], Sequence[float]], null_size: int,
             stop_after: int) -> KeyTest:
    """The key-randomization test of a key whose statistic is `score`, against `null_size` null keys whose
    statistics `null_scores(start, stop)` gives in their fixed order (computed lazily, in batches), stopping once
    `stop_after` (h) of them reach `score` (`stop_count`). A null statistic of -inf stands for one the defense
    proved to lie below `score` without computing it."""
    if score != score:  # NaN: a suspect whose statistic is undefined (e.g. NaN outputs) carries no evidence
        return KeyTest(1.0, score, 0, 0, null_size)
    exceed = scored = 0
    start, batch = 0, 2 * stop_after
    while start < null_size:
        stop = min(null_size, start + batch)
        scores = list(null_scores(start, stop))
        if len(scores) != stop - start:
            raise ValueError(f"null_scores({start}, {stop}) gave {len(scores)} scores, not {stop - start}")
        for s in scores:
            scored += 1
            exceed += s >= score
            if exceed == stop_after:
                return KeyTest(stop_after / scored, score, exceed, scored, null_size)
        start, batch = stop, 2 * batch
    return KeyTest((exceed + 1) / (null_size + 1), score, exceed, scored, null_size)


def key_randomization(defense: Defense, ctx: Context, suspect: nn.Module, key: Key, nulls: Sequence[Key],
                      alpha: float) -> KeyTest:
    """The key-randomization test of `key` on `suspect` against `nulls` (`Context.null_keys`), scored by the
    defense's `score_many` and read at level `alpha` (which sets where it may stop: `stop_count`); null keys
    proven below the key's score need not be scored in full."""
    own = defense.score_many(ctx, suspect, [key])[0]
    return key_test(own, lambda start, stop: defense.score_many(ctx, suspect, nulls[start:stop], floor=own), len(nulls),
                    stop_count(alpha, len(nulls)))
