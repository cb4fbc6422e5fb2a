"""Key-randomization tests have the error rate they state: on exchangeable null scores p ≤ α happens with
probability at most α (and, with continuous scores, about α), sequential stopping included; a level finer than
the null resolves is refused; null keys are drawn by the defense's own procedure, lazily, under the same
constraint as a pirate's secret."""
import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from bench.cache import ArtifactCache
from bench.config import get_profile
from bench.context import Context, derive_seed
from bench.nulls import check_alpha, key_randomization, key_test, smallest_p, stop_count
from bench.protocols import DefenseBase, Key, Verification, WmbenchError

TRIALS = 4000


def rejection_rate(alpha: float, draw, null_size: int = 99, stop_after: int = 10) -> float:
    """How often p ≤ alpha over TRIALS tests whose key and null scores `draw(rng)` returns (key first)."""
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(TRIALS):
        scores = draw(rng, null_size + 1)
        test = key_test(float(scores[0]), lambda a, b: scores[1 + a : 1 + b], null_size, stop_after)
        hits += test.p_value <= alpha
    return hits / TRIALS


def margin(alpha: float) -> float:
    return 4 * math.sqrt(alpha * (1 - alpha) / TRIALS)  # binomial error of the rate over TRIALS tests


@pytest.mark.parametrize("alpha", [0.05, 0.01])
@pytest.mark.parametrize("stop_after", [1, 10, 1000])  # with and without sequential stopping
def test_the_p_value_is_exact_on_exchangeable_continuous_scores(alpha, stop_after):
    rate = rejection_rate(alpha, lambda rng, n: rng.normal(size=n), stop_after=stop_after)
    assert abs(rate - alpha) <= margin(alpha)


@pytest.mark.parametrize("alpha", [0.05, 0.01])
@pytest.mark.parametrize("stop_after", [1, 10])
def test_ties_count_against_the_key_so_discrete_scores_stay_valid(alpha, stop_after):
    # a statistic with few values (an accuracy on few images): many ties, never more than α rejections
    rate = rejection_rate(alpha, lambda rng, n: rng.integers(0, 4, size=n).astype(float), stop_after=stop_after)
    assert rate <= alpha + margin(alpha)
    assert rejection_rate(alpha, lambda rng, n: np.zeros(n), stop_after=stop_after) == 0  # all tied: never detected


def test_a_key_above_every_null_gets_the_smallest_p_and_a_key_below_stops_early():
    top = key_test(10.0, lambda a, b: [0.0] * (b - a), 99, 10)
    assert top.p_value == pytest.approx(smallest_p(99)) == pytest.approx(0.01) and top.smallest
    scored = []
    low = key_test(-10.0, lambda a, b: scored.append((a, b)) or [0.0] * (b - a), 99, 10)
    assert low.p_value == 1.0 and low.scored == 10 and scored == [(0, 20)]  # stopped at the 10th null above it
    assert not low.smallest


def test_the_stop_is_tied_to_the_level_and_never_changes_a_verdict_at_it_or_finer():
    assert [stop_count(0.01, 99), stop_count(0.05, 19), stop_count(0.05, 99), stop_count(0.01, 100)] == [1, 1, 5, 2]
    rng = np.random.default_rng(2)
    for alpha, null_size in [(0.01, 99), (0.05, 19), (0.05, 99), (0.1, 99), (0.01, 100), (0.29, 100)]:
        h = stop_count(alpha, null_size)
        for trial in range(400):
            values = 3 if trial % 2 else 10**6  # ties (a discrete statistic) and none
            scores = rng.integers(0, values, size=null_size + 1).astype(float)
            scores[0] += rng.integers(0, 3) * values / 4  # keys from null-like to marked
            nulls = lambda a, b: scores[1 + a : 1 + b]
            stopped, full = key_test(scores[0], nulls, null_size, h), key_test(scores[0], nulls, null_size, null_size + 1)
            assert full.scored == null_size and stopped.scored <= null_size
            for level in (alpha, alpha / 2, smallest_p(null_size)):
                assert (stopped.p_value <= level) == (full.p_value <= level), (alpha, null_size, level, scores[0])
    asked = []
    low = key_test(-1.0, lambda a, b: asked.append((a, b)) or [0.0] * (b - a), 99, stop_count(0.01, 99))
    assert low.scored == 1 and low.p_value == 1.0 and asked == [(0, 2)]  # stops at the first null reaching the key


def test_nulls_are_scored_in_growing_batches_and_a_nan_statistic_is_no_evidence():
    asked = []
    full = key_test(0.5, lambda a, b: asked.append((a, b)) or [0.0] * (b - a), 99, 10)
    assert asked == [(0, 20), (20, 60), (60, 99)] and full.scored == 99 and full.smallest
    nan = key_test(float("nan"), lambda a, b: [0.0] * (b - a), 99, 10)
    assert nan.p_value == 1.0 and not nan.smallest
    with pytest.raises(ValueError, match="gave 3 scores, not 20"):
        key_test(0.5, lambda a, b: [0.0] * 3, 99, 10)


def test_null_embedding_proves_a_key_below_the_floor_only_when_it_is(make_ctx, make_marked):
    """`score_many(floor=f)` answers -inf only for keys whose exact statistic lies below f, and the exact
    statistic for every other key, on the marked model and on a clean one."""
    defense, ctx, key, marked = make_marked("null_embedding", "classifier", 7)
    keys = [key] + [defense.make_key(ctx, 1000 + j) for j in range(30)]
    for model in (marked, ctx.base_model()):
        exact = defense.score_many(ctx, model, keys)
        for floor in sorted(set(exact))[-3:] + [0.5]:  # floors at the keys' own scores (ties) and between them
            bounded = defense.score_many(ctx, model, keys, floor=floor)
            for e, b in zip(exact, bounded):
                assert b == e if e >= floor else b in (e, float("-inf")), (floor, e, b)


def test_a_level_finer_than_the_null_resolves_is_refused_in_one_line():
    check_alpha(0.01, 99)
    check_alpha(0.05, 19)
    with pytest.raises(WmbenchError, match=r"--alpha 0.005 is finer than the null resolves: 99 null keys"):
        check_alpha(0.005, 99)
    with pytest.raises(WmbenchError, match="finer than the null resolves"):
        check_alpha(0.01, 19)


def test_the_cli_refuses_an_alpha_the_profile_cannot_resolve(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--profile", "smoke", "--alpha", "0.01",
                           "--defenses", "null_embedding", "--attacks", "none", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "finer than the null resolves: 19 null keys" in lines[0]
    assert not (tmp_path / "run").exists()


class Vector(nn.Module):
    """A toy suspect: one vector."""

    def __init__(self, v: torch.Tensor):
        super().__init__()
        self.v = nn.Parameter(v)


class ToyScheme(DefenseBase):
    """A synthetic scheme: a key is a random unit vector and a label in 0–3 (both from its secret); a model is
    marked with a key when its vector is the key's; the statistic is their dot product."""

    name = "toy"
    model_kind = "classifier"
    version = "1"
    cache_null_keys = False

    def make_key(self, ctx, secret, model=None):
        rng = np.random.default_rng(derive_seed(self.name, secret))
        v = torch.tensor(rng.normal(size=16), dtype=torch.float32)
        return Key(self.name, secret, {"label": int(rng.integers(0, 4))}, {"v": v / v.norm()})

    def watermark(self, ctx, key):
        return Vector(key.tensors["v"].clone())

    def verify(self, ctx, suspect, key):
        s = float(suspect.v.detach() @ key.tensors["v"])
        return Verification(s > 0.9, s, 0.9, float("nan"))

    def rewatermark(self, ctx, model, key, budget):
        return self.watermark(ctx, key)

    @staticmethod
    def keys_collide(owner, pirate):
        return owner.params["label"] == pirate.params["label"]


def toy_context(tmp_path) -> Context:
    profile = dataclasses.replace(get_profile("smoke"), null_keys=99)
    return Context(None, profile, 0, "classifier", torch.device("cpu"), ArtifactCache(tmp_path))


def test_null_keys_make_the_owners_key_exchangeable_on_models_it_did_not_mark(tmp_path):
    ctx, scheme = toy_context(tmp_path), ToyScheme()
    innocent = Vector(torch.nn.functional.normalize(torch.randn(16, generator=torch.Generator().manual_seed(0)), dim=0))
    p_values = []
    for secret in range(400):
        key = scheme.make_key(ctx, secret)
        p_values.append(key_randomization(scheme, ctx, innocent, key, ctx.null_keys(scheme, key, innocent), 0.1).p_value)
    assert abs(np.mean(np.array(p_values) <= 0.1) - 0.1) <= 4 * math.sqrt(0.1 * 0.9 / 400)
    key = scheme.make_key(ctx, 7)
    marked = scheme.watermark(ctx, key)
    test = key_randomization(scheme, ctx, marked, key, ctx.null_keys(scheme, key, marked), 0.01)
    assert test.p_value == pytest.approx(0.01) and test.smallest


def test_a_pirates_null_keys_obey_the_constraint_on_its_secret_and_the_owners_do_not(tmp_path):
    ctx, scheme = toy_context(tmp_path), ToyScheme()
    owner = scheme.make_key(ctx, 1)
    model = Vector(torch.zeros(16))
    pirate_nulls = list(ctx.null_keys(scheme, scheme.make_key(ctx, 2), model, avoid=owner))
    owner_nulls = list(ctx.null_keys(scheme, owner, model))
    assert len(pirate_nulls) == len(owner_nulls) == 99
    assert not any(ToyScheme.keys_collide(owner, k) for k in pirate_nulls)
    assert sum(ToyScheme.keys_collide(owner, k) for k in owner_nulls) > 10  # about a quarter share its label
    assert [k.secret for k in ctx.null_keys(scheme, owner, model)] == [k.secret for k in owner_nulls]  # a fixed order


class Pirated(Vector):
    """A toy suspect that carries a pirate's mark besides its vector: every key with the pirate's label scores
    one more on it (as every null-embedding key with the pirate's target label hits on a pirated model)."""

    def __init__(self, v: torch.Tensor, label: int):
        super().__init__(v)
        self.label = label


class LabelScheme(ToyScheme):
    name = "toy_label"

    def verify(self, ctx, suspect, key):
        s = float(suspect.v.detach() @ key.tensors["v"]) + float(key.params["label"] == getattr(suspect, "label", -1))
        return Verification(s > 0.9, s, 0.9, float("nan"))


def test_on_a_pirated_suspect_owner_null_keys_that_avoid_the_pirates_key_keep_the_test_fair(tmp_path):
    ctx, scheme = toy_context(tmp_path), LabelScheme()
    owner = scheme.make_key(ctx, 3)
    pirate = next(scheme.make_key(ctx, s) for s in range(100, 200) if not LabelScheme.keys_collide(owner, scheme.make_key(ctx, s)))
    both = Pirated(owner.tensors["v"].clone(), pirate.params["label"])  # the owner's mark and the pirate's
    plain = key_randomization(scheme, ctx, both, owner, ctx.null_keys(scheme, owner), 0.1)
    fair = key_randomization(scheme, ctx, both, owner, ctx.null_keys(scheme, owner, avoid=pirate), 0.01)
    assert plain.p_value > 0.1  # the null keys sharing the pirate's label outscore the owner's own mark
    assert fair.smallest and fair.p_value == pytest.approx(0.01)
    # on pirated suspects the owner never marked, the avoiding test keeps its level
    rng = torch.Generator().manual_seed(1)
    p_values = []
    for secret in range(1000, 1400):
        key = scheme.make_key(ctx, secret)
        if LabelScheme.keys_collide(key, pirate):
            continue  # the harness never pairs an owner with a pirate of the same label
        suspect = Pirated(torch.nn.functional.normalize(torch.randn(16, generator=rng), dim=0), pirate.params["label"])
        p_values.append(key_randomization(scheme, ctx, suspect, key, ctx.null_keys(scheme, key, avoid=pirate), 0.1).p_value)
    n = len(p_values)
    assert n > 250 and abs(np.mean(np.array(p_values) <= 0.1) - 0.1) <= 4 * math.sqrt(0.1 * 0.9 / n)
