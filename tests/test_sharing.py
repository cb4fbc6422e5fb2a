"""Work is shared wherever the inputs are the same, and only there: attacks on bit-identical victims run
once; an attack that uses the cell's defense is not shared between defenses; both extraction attacks
start from one stolen model."""
import torch

from attacks.extraction import Extraction, RotatedExtraction
from attacks.fine_tuning import FineTuning
from attacks.piracy import Piracy
from bench.results import CellId
from bench.runner import run_cell


def count_runs(monkeypatch, attack_cls, version: str) -> list[str]:
    """Record each real run of `attack_cls` (under a fresh version, so no earlier cache entry is reused):
    calls of `run_prefixes` where the attack has prefix families (every run goes through it), else of `run`."""
    calls: list[str] = []
    from bench.protocols import AttackBase

    method = "run_prefixes" if attack_cls.prefix_family is not AttackBase.prefix_family else "run"
    original = getattr(attack_cls, method)

    def counting(self, ctx, model, strength):
        calls.append(ctx.defense)
        return original(self, ctx, model, strength)

    monkeypatch.setattr(attack_cls, method, counting)
    monkeypatch.setattr(attack_cls, "version", version)
    return calls


def test_control_defense_shares_the_attack_on_the_clean_model(run_config, monkeypatch):
    calls = count_runs(monkeypatch, FineTuning, "sharing-test")
    cfg = run_config()
    # the control's "marked" model is the clean one: attacked once, for the cell and its innocent control
    assert run_cell(cfg, CellId("none", "fine_tuning", "last_layer", 0)).status == "ok"
    assert len(calls) == 1
    # null embedding's clean victim is the same clean classifier: only its marked model is attacked anew
    assert run_cell(cfg, CellId("null_embedding", "fine_tuning", "last_layer", 0)).status == "ok"
    assert len(calls) == 2


def test_an_attack_that_uses_the_defense_is_not_shared_between_defenses(run_config, monkeypatch):
    calls = count_runs(monkeypatch, Piracy, "sharing-test")
    cfg = run_config()
    run_cell(cfg, CellId("none", "piracy", "2", 0))
    run_cell(cfg, CellId("null_embedding", "piracy", "2", 0))
    # none: marked == clean, one run; null embedding: its marked model and, by its scheme, the clean one
    assert calls == ["none", "null_embedding", "null_embedding"]


def test_a_prefix_family_is_computed_once(run_config, monkeypatch):
    """Piracy at 2 epochs trains 12 once and stores 2 on the way: the cell of 12 reuses it."""
    calls = count_runs(monkeypatch, Piracy, "prefix-test")
    cfg = run_config()
    for strength in ("2", "12"):
        assert run_cell(cfg, CellId("null_embedding", "piracy", strength, 0)).status == "ok"
    assert calls == ["null_embedding", "null_embedding"]  # the marked model's family, the clean model's family


def test_rotated_extraction_reuses_the_stolen_model(make_ctx, monkeypatch):
    import attacks.extraction as extraction

    ctx = make_ctx("encoder", 0)
    monkeypatch.setattr(Extraction, "version", "sharing-test")
    calls = []
    original = extraction.extract
    monkeypatch.setattr(extraction, "extract", lambda *a: calls.append(1) or original(*a))
    victim = ctx.base_model()
    stolen = Extraction().run(ctx, victim, "2000")
    rotated = RotatedExtraction().run(ctx, victim, "2000")
    assert len(calls) == 1
    x = ctx.data.test.x[:64]
    with torch.no_grad():
        a, b = stolen(x), rotated(x)
    assert not torch.allclose(a, b, atol=1e-3)  # disguised …
    assert torch.allclose(a @ a.T, b @ b.T, atol=1e-3)  # … by a rotation: every inner product kept


def test_a_prefix_family_of_a_scheme_that_does_not_train(run_config):
    """The control defense's `rewatermark` trains nothing: every budget of the family is its unchanged model."""
    cfg = run_config()
    for strength in ("2", "12"):
        assert run_cell(cfg, CellId("none", "piracy", strength, 0)).status == "ok"
