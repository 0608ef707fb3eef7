"""Arms as data: the spec every part of the lab reads, parsed from a config's ``arms``."""

from __future__ import annotations

import pytest

from lab.arms import folder_name, grid_arms, order_key, specs
from lab.config import ConfigError, load_preset


def test_plain_and_regularized_specs():
    cfg = load_preset("tiny-test", ["arms=lora,pissa,balora,balora@0.05,0.005,0.005"])
    got = {s.name: s for s in specs(cfg)}
    assert [s.name for s in specs(cfg)] == cfg.arms
    assert (got["lora"].init, got["lora"].regularized) == ("lora", False)
    assert (got["pissa"].init, got["pissa"].regularized) == ("pissa", False)
    assert got["lora"].lambdas == got["pissa"].lambdas == (0.0, 0.0, 0.0)
    assert got["balora"].lambdas == (cfg.reg.lambda1, cfg.reg.lambda2, cfg.reg.lambda3)
    variant = got["balora@0.05,0.005,0.005"]
    assert (variant.init, variant.regularized) == ("pissa", True)
    assert variant.lambdas == (0.05, 0.005, 0.005)
    assert variant.folder == "balora-0p05_0p005_0p005"
    assert all(s.lr == cfg.train.lr for s in got.values())


def test_overrides_parse_a_list_with_commas_inside_arm_names():
    cfg = load_preset("tiny-test", {"arms": ["lora", "balora@0.1,0,0"]})
    assert cfg.arms == ["lora", "balora@0.1,0,0"]


def test_per_arm_learning_rate():
    cfg = load_preset(
        "tiny-test",
        {
            "arms": ["lora", "pissa", "balora", "balora@1,0,0"],
            "train": {"lr_by_arm": {"pissa": 1e-4, "balora": 5e-4}},
        },
    )
    lr = {s.name: s.lr for s in specs(cfg)}
    assert lr == {"lora": cfg.train.lr, "pissa": 1e-4, "balora": 5e-4, "balora@1,0,0": 5e-4}


@pytest.mark.parametrize(
    "arms, needle",
    [
        (["lora", "dora"], "'dora'"),
        (["balora@0.1,0.2"], "balora@0.1,0.2"),
        (["balora@a,b,c"], "balora@a,b,c"),
        (["lora@0.1,0,0"], "lora@0.1,0,0"),
        (["balora@-1,0,0"], "balora@-1,0,0"),
        (["balora@0.1,0,0", "balora@0.1,0,0"], "twice"),
    ],
)
def test_bad_arms_raise_naming_them(arms, needle):
    with pytest.raises(ConfigError, match="arms") as err:
        load_preset("tiny-test", {"arms": arms})
    assert needle in str(err.value)


def test_lr_by_arm_must_name_an_arm():
    with pytest.raises(ConfigError, match="train.lr_by_arm.pisa"):
        load_preset("tiny-test", {"train": {"lr_by_arm": {"pisa": 1e-4}}})


def test_grid_arms_and_order():
    arms = grid_arms([(0.05, 0.005, 0.005), (0.1, 0.0, 0.0), (0.05, 0.005, 0.005)])
    assert arms == ["balora@0.05,0.005,0.005", "balora@0.1,0,0"]
    cfg = load_preset("tiny-test", {"arms": arms})
    assert [s.lambdas for s in specs(cfg)] == [(0.05, 0.005, 0.005), (0.1, 0.0, 0.0)]
    names = ["balora@0.1,0,0", "balora", "base", "lora", "pissa", "other"]
    assert sorted(names, key=order_key) == [
        "base",
        "lora",
        "pissa",
        "balora",
        "balora@0.1,0,0",
        "other",
    ]
    assert folder_name("lora") == "lora" and "." not in folder_name("balora@1e-3,0.5,0")


VOCABULARY = {"ARMS", "ARM_ORDER", "ARM_NAMES", "MAX_ARMS", "arm_key"}


def _definitions(path):
    """Names a module binds at its top level (assignments, functions, classes)."""
    import ast

    out = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out.add(node.name)
    return out


def test_the_arm_vocabulary_is_defined_only_in_arms_py():
    from conftest import ROOT

    homes = {}
    for path in sorted((ROOT / "lab").rglob("*.py")):
        for name in _definitions(path) & VOCABULARY:
            homes.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert homes == {name: ["lab/arms.py"] for name in VOCABULARY}


def test_the_users_of_the_vocabulary_see_the_one_home():
    from lab import arms
    from lab.engine import adapters
    from lab.evidence import verdicts
    from lab.plots import common
    from lab.ui import form

    assert common.ARM_ORDER is arms.ARM_ORDER and common.arm_key is arms.arm_key
    assert verdicts.ARM_NAMES is arms.ARM_NAMES and adapters.MAX_ARMS == arms.MAX_ARMS
    assert dict(form.ARM_CHOICES) == {"LoRA": "lora", "PiSSA": "pissa", "BA-LoRA": "balora"}
    assert verdicts.arm_display("balora#s1") == "BA-LoRA (seed 1)"
    assert verdicts.arm_display("base") == "the base model"
    assert sorted(["balora@0.1,0,0", "pissa", "base", "lora"], key=arms.arm_key) == [
        "base", "lora", "pissa", "balora@0.1,0,0"
    ]  # fmt: skip
