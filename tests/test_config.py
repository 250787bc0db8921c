"""Config schema: layering, overrides, and one clear error per kind of mistake."""

from __future__ import annotations

import pytest

from cifarlab.config import (
    RunConfig,
    config_from_dict,
    list_presets,
    load_config,
    parse_override,
    to_dict,
)
from cifarlab.errors import ConfigError


def test_defaults_validate_and_round_trip():
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    assert cfg.data.val_size == 5000 and cfg.train.batch_size == 128
    assert config_from_dict(to_dict(cfg)) == cfg


def test_layers_preset_file_overrides(tmp_path):
    f = tmp_path / "my.yaml"
    f.write_text("optim:\n  lr: 0.3\ntrain:\n  epochs: 7\nmodel:\n  options: {width_mult: 0.5}\n")
    cfg = load_config("quick_cnn", [f], ["optim.lr=0.01", "model.options.activation=elu", "optim.name=adam",
                                     "optim.betas=[0.8, 0.9]"])
    assert cfg.model.name == "quick_cnn"  # from the preset
    assert cfg.train.epochs == 7  # file beats preset
    assert cfg.optim.lr == 0.01  # override beats file
    assert cfg.model.options == {"width_mult": 0.5, "activation": "elu"}  # mappings merge key by key
    assert cfg.optim.betas == (0.8, 0.9)
    assert isinstance(cfg.optim.lr, float)


def test_int_accepted_for_float_but_not_reverse():
    assert load_config(overrides=["optim.lr=1"]).optim.lr == 1.0
    assert load_config(overrides=["optim.lr=1e-3"]).optim.lr == 1e-3  # YAML 1.1 would read a string
    with pytest.raises(ConfigError, match=r"'optim.lr': got 'fast' \(str\), expected float"):
        load_config(overrides=["optim.lr=fast"])
    with pytest.raises(ConfigError, match=r"'train.epochs': got 2.5 \(float\), expected int"):
        load_config(overrides=["train.epochs=2.5"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=0.1", r"unknown config key 'optim.lrr'; valid keys here: name, lr,"),
        ("nope.x=1", r"unknown config key 'nope'"),
        ("train.epochs=ten", r"'train.epochs': got 'ten' \(str\), expected int"),
        ("optim.name=adamax", r"'optim.name': got 'adamax' .* expected one of 'sgd', 'adam', 'adamw'"),
        ("train.epochs=0", r"'train.epochs': got 0, expected an integer >= 1"),
        ("optim.lr=-1", r"'optim.lr': got -1.0, expected a learning rate > 0"),
        ("data.val_size=60000", r"'data.val_size'"),
        ("data.subset=48000", r"'data.subset': got 48000, expected at most 50000 - data.val_size = 45000"),
        ("train.flip=true", r"unknown config key 'train.flip'"),
        ("augment.flip=3", r"'augment.flip': got 3 \(int\), expected bool"),
        ("optim.betas=[0.9]", r"'optim.betas'"),
        ("train.device=tpu", r"'train.device': got 'tpu'"),
        ("lr", r"override 'lr' is not of the form key.subkey=value"),
    ],
)
def test_bad_values_give_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="early stopping needs a validation split"):
        load_config(overrides=["data.val_size=0", "train.early_stopping.patience=3"])
    with pytest.raises(ConfigError, match=r"optim\.nesterov"):
        load_config(overrides=["optim.name=adam", "optim.nesterov=true"])


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(files=[tmp_path / "missing.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line"):
        load_config(files=[bad])
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(files=[listy])


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError, match=r"unknown preset 'fastest'; available presets: .*quick"):
        load_config("fastest")


def test_every_preset_loads():
    names = list_presets()
    assert {"quick", "vgg_a", "vgg_a_bn", "vgg_a_cpu", "vgg_a_bn_cpu"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.description, f"preset {name} has no description"


def test_parse_override_types():
    assert parse_override("a.b=0.5") == {"a": {"b": 0.5}}
    assert parse_override("a=null") == {"a": None}
    assert parse_override("a=[1, 2]") == {"a": [1, 2]}
    assert parse_override("a=relu") == {"a": "relu"}
