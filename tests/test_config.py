"""Presets load and validate; unknown keys and bad values raise errors naming the field."""

from __future__ import annotations

import pytest

from lab.config import (
    ConfigError,
    dump_yaml,
    from_dict,
    list_presets,
    load_config_file,
    load_preset,
)

REQUIRED = {"tiny-test", "classroom-cpu", "gemma3-270m", "minilm-nlu", "paper-llama2-7b"}


def test_required_presets_exist():
    assert REQUIRED <= set(list_presets())


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_loads_and_round_trips(name, tmp_path):
    cfg = load_preset(name)
    assert cfg.name == name
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config_file(path) == cfg


def test_paper_preset_matches_the_paper():
    cfg = load_preset("paper-llama2-7b")
    assert cfg.lora.rank == cfg.lora.alpha == 128
    assert (
        cfg.train.lr == 2e-5 and cfg.train.scheduler == "cosine" and cfg.train.warmup_ratio == 0.03
    )
    assert (cfg.reg.lambda1, cfg.reg.lambda2, cfg.reg.lambda3) == (0.025, 0.005, 0.005)


def test_nlu_preset_takes_the_nlu_defaults():
    cfg = load_preset("minilm-nlu")
    assert cfg.task == "nlu"
    assert (cfg.reg.lambda1, cfg.reg.lambda2, cfg.reg.lambda3) == (0.15, 0.03, 0.03)
    assert cfg.reg.svd_k == 5 and cfg.reg.svd_norm == "nuclear"


def test_overrides_apply_with_types():
    cfg = load_preset("tiny-test", ["reg.lambda1=0", "train.steps=3", "arms=lora,balora"])
    assert cfg.reg.lambda1 == 0.0 and isinstance(cfg.reg.lambda1, float)
    assert cfg.train.steps == 3 and cfg.arms == ["lora", "balora"]


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.stepz=3", "train.stepz"),
        ("nonsense=1", "nonsense"),
        ("train.steps=0", "train.steps"),
        ("train.steps=abc", "train.steps"),
        ("reg.lambda1=-0.1", "reg.lambda1"),
        ("reg.svd_norm=spectral", "reg.svd_norm"),
        ("arms=lora,qlora", "arms"),
        ("train.lr=nan", "train.lr"),
        ("data.label_noise=1.5", "data.label_noise"),
        ("task=vision", "task"),
    ],
)
def test_bad_override_names_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_preset("tiny-test", [override])


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*tiny-test"):
        load_preset("nope")


def test_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match="train"):
        from_dict({"train": 3})


def test_declared_constraints_give_the_messages():
    from lab.config import broken, check_value, rules

    assert rules("data.minority_fraction") == {"ge": 0, "lt": 0.5}
    assert check_value("data.minority_fraction", 0.5) == "must be in [0, 0.5)"
    assert check_value("data.minority_fraction", 0.49) is None
    assert check_value("train.max_grad_norm", -1.0) == "must be in [0, 1000000] (0: off)"
    assert check_value("reg.svd_norm", "spectral") == (
        "must be one of frobenius, nuclear, got 'spectral'"
    )
    assert broken(0, {"gt": 0}) == "must be positive" and broken(1e-9, {"gt": 0}) is None
    assert rules("model.name") == {}  # no declared constraint: checked as code, if at all


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.minority_fraction=0.5", "data.minority_fraction: must be in [0, 0.5)"),
        ("train.max_grad_norm=-1", "train.max_grad_norm: must be in [0, 1000000] (0: off)"),
        ("reg.top_k=1", "reg.top_k: must be at least 2"),
        ("lora.alpha=0", "lora.alpha: must be in (0, 100000]"),
        ("model.dtype=int8", "model.dtype: must be one of auto, float32, bfloat16, float16"),
    ],
)
def test_validation_reads_the_declared_constraints(override, message):
    with pytest.raises(ConfigError) as e:
        load_preset("tiny-test", [override])
    assert str(e.value).startswith(message)


def test_the_data_loader_takes_the_declared_minority_bound():
    from lab.config import check_value
    from lab.datasets import load_task_data
    from lab.datasets.encoding import DataError

    # refused before any data is read, with the config's own bound
    with pytest.raises(DataError, match=r"minority_fraction must be in \[0, 0\.5\), got 0\.5"):
        load_task_data("sentiment", minority_fraction=0.5)
    assert check_value("data.minority_fraction", 0.5) is not None
