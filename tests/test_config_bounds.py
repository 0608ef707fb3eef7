"""Every setting is bounded: a bad value is refused naming the field, and in public mode every
number has a finite upper bound (a request cannot buy hours of worker time with one field)."""

from __future__ import annotations

import math
from typing import get_args, get_origin

import pytest

from lab.config import ConfigError, RunConfig, load_preset
from lab.fields import leaves
from lab.jobs.hosting import LOCAL_LIMITS, PUBLIC_LIMITS, check_limits, upper_bound

NUMBERS = (int, float)


def _numeric(typ) -> bool:
    if typ in NUMBERS:
        return True
    args = get_args(typ)
    return get_origin(typ) in (list, dict) and bool(args) and args[-1] in NUMBERS


# (override, the field the error names): refused everywhere (validation) ...
REFUSED = [
    pytest.param("train.seed=-5", "train.seed", id="train.seed-negative"),
    pytest.param("train.seed=4294967296", "train.seed", id="train.seed-too-large"),
    pytest.param("model.seed=-1", "model.seed", id="model.seed"),
    pytest.param("train.seeds=[0, -1]", r"train.seeds\[1\]", id="train.seeds"),
    pytest.param("train.lr=1000", "train.lr", id="train.lr"),
    pytest.param("train.lr_grid=[0.001, 50]", r"train.lr_grid\[1\]", id="train.lr_grid"),
    pytest.param("train.lr_by_arm={lora: 100}", "train.lr_by_arm.lora", id="train.lr_by_arm"),
    pytest.param("reg.lambda1=1e9", "reg.lambda1", id="reg.lambda1"),
    pytest.param("reg.temperature=1e9", "reg.temperature", id="reg.temperature"),
    pytest.param("lora.alpha=1e12", "lora.alpha", id="lora.alpha"),
    pytest.param("train.weight_decay=1e6", "train.weight_decay", id="train.weight_decay"),
]
# ... and over the public app's limits (hosting.Limits)
PUBLIC = [
    pytest.param("lora.pissa_niter=500", "lora.pissa_niter", id="lora.pissa_niter"),
    pytest.param("reg.top_k=5000", "reg.top_k", id="reg.top_k"),
    pytest.param("reg.svd_k=500", "reg.svd_k", id="reg.svd_k"),
    pytest.param("train.eval_every=100000", "train.eval_every", id="train.eval_every"),
    pytest.param("train.tune_steps=100000", "train.tune_steps", id="train.tune_steps"),
]


@pytest.mark.parametrize("override, field", REFUSED)
def test_a_value_out_of_its_bounds_is_refused_naming_the_field(override, field):
    with pytest.raises(ConfigError, match="^" + field.replace(".", r"\.") + ": "):
        load_preset("tiny-test", [override])


@pytest.mark.parametrize("override, field", PUBLIC)
def test_a_value_over_the_public_limit_is_refused_naming_the_field(override, field):
    cfg = load_preset("tiny-test", [override])
    check_limits(cfg, LOCAL_LIMITS)  # a trusted local user may
    with pytest.raises(ConfigError, match="^" + field.replace(".", r"\.") + ": .*over the limit"):
        check_limits(cfg, PUBLIC_LIMITS)


def test_every_numeric_field_has_a_finite_upper_bound_in_public_mode():
    numeric = [path for path, _, typ in leaves(RunConfig) if _numeric(typ)]
    assert len(numeric) >= 30
    unbounded = [p for p in numeric if not math.isfinite(upper_bound(p, PUBLIC_LIMITS) or math.inf)]
    assert unbounded == []


def test_the_public_bounds_admit_every_default():
    cfg = RunConfig()
    for path, _, typ in leaves(RunConfig):
        if typ in NUMBERS:
            node = cfg
            for part in path.split("."):
                node = getattr(node, part)
            assert node <= upper_bound(path, PUBLIC_LIMITS), path


def test_a_key_given_twice_in_a_preset_is_refused_naming_the_key_and_the_file(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("name: twice\ntrain:\n  steps: 3\n  steps: 300\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"preset twice\.yaml: key 'steps' is given twice \(line 4\)"
    ):
        load_preset(path)


def test_a_preset_with_an_unhashable_key_is_a_config_error(tmp_path):
    path = tmp_path / "listkey.yaml"
    path.write_text("name: listkey\n? [a, b]\n: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"listkey\.yaml"):
        load_preset(path)


def test_every_field_has_a_label_and_help():
    missing = [
        p
        for p, f, _ in leaves(RunConfig)
        if not f.metadata.get("label") or not f.metadata.get("help")
    ]
    assert missing == []
