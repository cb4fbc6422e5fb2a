import copy
import dataclasses
import sys
import types
from importlib import metadata

import pandas as pd
import pytest
import torch

from bench import registry
from bench.report import write_leaderboard
from bench.cache import ArtifactCache
from bench.protocols import WmbenchError


def test_in_tree_methods_are_registered():
    assert {"none", "null_embedding"} <= set(registry.defense_names())
    assert {"none", "fine_tuning", "pruning"} <= set(registry.attack_names())


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(WmbenchError, match="unknown attack 'nope'; valid: .*fine_tuning"):
        registry.get_attack("nope")


def test_compatibility_follows_model_kinds():
    assert registry.compatible(registry.get_defense("null_embedding"), registry.get_attack("pruning"))


@pytest.fixture
def fake_plugins(monkeypatch):
    """Simulate an installed outside package that declares entry points (one good, one broken)."""
    module = types.ModuleType("wmbench_test_plugin")

    class BlurAttack:
        name = "blur_plugin"
        model_kinds = ("classifier",)
        strengths = ("1",)
        version = "1"
        runs: list[str] = []  # one entry per real run (what the chain test counts)

        def run(self, ctx, model, strength):
            self.runs.append(strength)
            blurred = copy.deepcopy(model)
            with torch.no_grad():
                for p in blurred.parameters():
                    p.mul_(0.99)
            return blurred

    module.BlurAttack = BlurAttack
    monkeypatch.setitem(sys.modules, "wmbench_test_plugin", module)
    eps = [
        metadata.EntryPoint("blur_plugin", "wmbench_test_plugin:BlurAttack", registry.ATTACK_GROUP),
        metadata.EntryPoint("broken_plugin", "wmbench_missing_module:Thing", registry.ATTACK_GROUP),
    ]
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points",
                        lambda group=None, **kw: [e for e in eps if e.group == group] if group else real(**kw))
    with pytest.warns(UserWarning, match="broken_plugin"):
        registry.reload()
    yield
    monkeypatch.undo()
    registry.reload()


def test_entry_point_plugin_is_loaded_and_a_broken_one_is_named(fake_plugins):
    assert "blur_plugin" in registry.attack_names()
    assert registry.get_attack("blur_plugin").strengths == ("1",)
    assert any("broken_plugin" in e for e in registry.plugin_errors)
    assert "pruning" in registry.attack_names()  # the rest still loads


def test_decorator_rejects_a_second_class_under_a_taken_name():
    class Impostor:
        name, model_kinds, strengths, version = "pruning", ("classifier",), ("1",), "1"

        def run(self, ctx, model, strength):
            return model

    with pytest.raises(WmbenchError, match="registered twice"):
        registry.register_attack(Impostor)


def test_a_defense_plugin_without_rewatermark_is_refused_at_load_in_one_line(plugin_entry_point):
    """The contract is checked when a plugin loads (not in its piracy cells): the refusal names the member."""

    class NoPiracy:  # everything a defense needs but `rewatermark`
        name, model_kind, version = "no_piracy_plugin", "classifier", "1"

        def make_key(self, ctx, secret, model=None): ...

        def watermark(self, ctx, key): ...

        def verify(self, ctx, suspect, key): ...

    plugin_entry_point(registry.DEFENSE_GROUP, NoPiracy)
    with pytest.warns(UserWarning, match="lacks rewatermark"):
        registry.reload()
    try:
        assert "no_piracy_plugin" not in registry.defense_names()
        (error,) = [e for e in registry.plugin_errors if "no_piracy_plugin" in e or "NoPiracy" in e]
        assert error.endswith("lacks rewatermark") and "\n" not in error
    finally:
        registry.reload()


def test_a_plugin_that_does_not_subclass_the_base_gets_its_documented_defaults(plugin_entry_point):
    class Bare:
        name, model_kinds, strengths, version = "bare_plugin", ("classifier",), ("1", "2"), "1"

        def run(self, ctx, model, strength):
            return model

    plugin_entry_point(registry.ATTACK_GROUP, Bare)
    registry.reload()
    try:
        attack = registry.get_attack("bare_plugin")
        assert (attack.needs, attack.per_defense, attack.prefix_family("2")) == ("weights", False, ("2",))
        assert attack.strengths_for("classifier") == ("1", "2") and attack.needs_for("vlp") == "weights"
        assert isinstance(attack, Bare)
    finally:
        registry.reload()


def test_a_plugin_named_like_a_built_in_is_refused_not_silently_dropped(plugin_entry_point):
    class Pruning:
        name, model_kinds, strengths, version = "pruning", ("classifier",), ("1",), "1"

        def run(self, ctx, model, strength):
            return model

    plugin_entry_point(registry.ATTACK_GROUP, Pruning)
    with pytest.warns(UserWarning, match="the name is taken: attack 'pruning' is already registered"):
        registry.reload()
    try:
        assert registry.get_attack("pruning").strengths == ("0.5", "0.8", "0.9", "0.9+ft")  # the built-in
        assert any("already registered" in e for e in registry.plugin_errors)
    finally:
        registry.reload()


def test_a_chain_spec_names_its_stages_kinds_strengths_and_threat_model():
    chain = registry.get_attack("extraction>fine_tuning:all_layers")
    assert chain.name == "extraction:8000>fine_tuning"  # a stage without strength runs at its strongest
    assert chain.strengths == ("all_layers",) and set(chain.model_kinds) == {"classifier", "encoder", "vlp"}
    vlpmarker = registry.get_defense("vlpmarker")
    assert registry.threat_model_gap(vlpmarker, chain) == ""  # the thief fine-tunes its own stolen copy
    assert "outside the threat model" in registry.threat_model_gap(vlpmarker, registry.get_attack("fine_tuning"))
    assert registry.get_attack(chain.name).strengths_for("vlp") == ("all_layers", "large_lr")
    for bad, message in (("extraction>", "both sides"), ("extraction:9>pruning", "no strength '9'"),
                         ("nope>pruning", "unknown attack 'nope'")):
        with pytest.raises(WmbenchError, match=message):
            registry.get_attack(bad)


def test_chains_with_a_plugin_build_their_shared_first_stage_once(fake_plugins, make_ctx, tmp_path):
    ctx = make_ctx("classifier", 0)
    victim = ctx.base_model()
    ctx = dataclasses.replace(ctx, cache=ArtifactCache(tmp_path))  # nothing of these chains cached yet
    runs = registry.get_attack("blur_plugin").runs
    before = len(runs)
    outputs = []
    for spec in ("blur_plugin>pruning:0.5", "blur_plugin>fine_tuning:all_layers"):
        chain = registry.get_attack(spec)
        assert chain.name.startswith("blur_plugin:1>")
        outputs.append(ctx.attacked(chain, victim, chain.strengths[0]).model)
    assert len(runs) == before + 1  # the plugin stage ran once, the second chain loaded it
    pruned_weights = torch.cat([p.flatten() for p in outputs[0].parameters()])
    assert (pruned_weights == 0).float().mean() > 0.4  # the second stage ran on the first one's output


def test_a_chain_with_a_plugin_runs_in_the_matrix(fake_plugins, run_config):
    from bench.runner import run_matrix

    cfg = run_config(defenses=["null_embedding"], attacks=["blur_plugin>pruning:0.5"])
    summary = run_matrix(cfg, progress=False)
    write_leaderboard(cfg.out, cfg.label)
    assert (summary.ran, summary.failed) == (1, 0)
    table = pd.read_csv(cfg.out / "leaderboard.csv")
    assert list(table.attack) == ["blur_plugin:1>pruning"] and list(table.strength.astype(str)) == ["0.5"]
