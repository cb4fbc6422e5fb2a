import sys
import types
from importlib import metadata

import pytest

from bench import registry
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

        def run(self, ctx, model, strength):
            return model

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
        name = "pruning"

    with pytest.raises(WmbenchError, match="registered twice"):
        registry.register_attack(Impostor)
