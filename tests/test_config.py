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
