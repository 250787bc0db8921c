"""Every reports.md table has a shipped experiment preset whose full scale is the report's protocol: a table of
(preset, report numbers, protocol keys per variant) checked against the resolved full-scale configs; plus the
ours-beside-theirs table and its ordering verdict, and `sweep --list`."""

from __future__ import annotations

from typing import Any

import pytest

from cifarlab.errors import ConfigError
from cifarlab.experiments.compare import RunRecord, aggregate, ordering_verdict, reference_rows
from cifarlab.experiments.sweep import expand, list_experiment_presets, load_spec, parse_spec

CNN3 = {"model.name": "cnn3", "optim.name": "adam", "optim.lr": 1e-3, "train.batch_size": 128,
        "augment.crop_padding": 4, "augment.flip": True}
COURSE = {"data.normalize": "half", "augment.crop_padding": 0, "augment.flip": False, "optim.name": "adam",
          "optim.lr": 1e-3, "model.options.init": "xavier_normal"}
MYNET = {"model.name": "mynet", "data.normalize": "half", "augment.crop_padding": 0, "augment.flip": False,
         "optim.name": "sgd", "train.epochs": 50}
ZOO = {"model.name": "resnet18", "train.epochs": 100, "augment.crop_padding": 4, "augment.flip": True}

# preset -> (their numbers as printed in reports.md (None: ranking only), keys every variant has,
#            {variant: keys of that variant})
TABLES: dict[str, tuple[dict[str, float] | None, dict[str, Any], dict[str, dict[str, Any]]]] = {
    "vgg_a_variants": (
        {"vgg_a": 75.77, "vgg_a_l2": 74.98, "vgg_a_bn": 80.43, "vgg_a_bn_dropout": 81.66, "vgg_a_light": 68.71,
         "vgg_a_bn_sgd": 75.53},
        {**COURSE, "train.epochs": 30, "train.batch_size": 1024, "model.options": {"init": "xavier_normal"}},
        {"vgg_a": {"model.name": "vgg_a", "optim.weight_decay": 0.0}, "vgg_a_l2": {"optim.weight_decay": 5e-4},
         "vgg_a_bn": {"model.name": "vgg_a_bn"}, "vgg_a_bn_dropout": {"model.name": "vgg_a_bn_dropout"},
         "vgg_a_light": {"model.name": "vgg_a_light"},
         "vgg_a_bn_sgd": {"model.name": "vgg_a_bn", "optim.name": "sgd", "optim.lr": 0.1}}),
    "vgg_family": (
        {"vgg_a": 83.07, "vgg_a_bn": 89.36, "vgg_a_light": 77.71, "vgg_a_dropout": 82.90},
        {**COURSE, "train.batch_size": 128, "train.early_stopping.patience": 10, "train.test_weights": "best"},
        {"vgg_a_dropout": {"model.name": "vgg_a_dropout"}}),
    "vgg_a_bn_valid": ({"vgg_a": 77.52, "vgg_a_bn": 82.88}, {**COURSE, "train.epochs": 18}, {}),
    "mynet_losses": (
        {"cross_entropy": 62.57, "nll": 67.55, "adagrad": 52.27}, {**MYNET, "optim.name": None},
        {"cross_entropy": {"loss.name": "cross_entropy", "optim.name": "sgd"},
         "nll": {"loss.name": "nll", "optim.name": "sgd"}, "adagrad": {"loss.name": "nll", "optim.name": "adagrad"}}),
    "mynet": (
        {"hidden100": 67.55, "hidden500": 70.13, "hidden500_k5x3": 69.34}, {**MYNET, "loss.name": "nll"},
        {"hidden100": {"model.options": {"hidden": 100}}, "hidden500": {"model.options": {"hidden": 500}},
         "hidden500_k5x3": {"model.options": {"hidden": 500, "kernel_size": [5, 3]}}}),
    "mynet_activations": ({"relu": 67.55, "tanh": 61.15}, {**MYNET, "loss.name": "nll"},
                          {"tanh": {"model.options.activation": "tanh"},
                           "softmax": {"model.options.activation": "softmax"}}),
    "init": (
        {"resnet_default": 75.51, "resnet_xavier": 75.29, "vggnet_default": 80.34, "vggnet_xavier": 80.87},
        {"optim.name": "sgd", "loss.name": "nll", "train.epochs": 100},
        {"resnet_default": {"model.name": "residual_cnn"}, "vggnet_xavier": {"model.name": "vgg16",
                                                                             "model.options.init": "xavier_uniform"}}),
    "model_zoo": (
        {"resnet18": 92.06, "resnext50_32x4d": 94.85, "dpn26": 93.26, "dla": 94.65, "densenet121": 94.69},
        {"train.epochs": 100, "optim.name": "sgd", "optim.lr": 0.1}, {"dla": {"model.name": "dla"}}),
    "densenet_best": (
        {"densenet121_cutout_leaky_adam": 94.89},
        {"model.name": "densenet121", "model.options.activation": "leaky_relu", "augment.cutout": 16,
         "optim.name": "adam", "train.epochs": 200}, {}),
    "activations_relu_family": (None, {**ZOO, "optim.name": "sgd"},
                                {"relu6": {"model.options.activation": "relu6"}}),
    "losses_zoo": (None, {**ZOO, "optim.name": "sgd"}, {"multilabel_soft_margin":
                                                        {"loss.name": "multilabel_soft_margin"}}),
    "optimizers": (
        None, {**ZOO, "optim.lr": 1e-3, "optim.weight_decay": 1e-4, "optim.grad_clip": 1.0, "sched.name": "step",
               "sched.step_size": 20, "sched.gamma": 0.1},
        {"sgd": {"optim.name": "sgd"}, "adam": {"optim.name": "adam"}, "rmsprop": {"optim.name": "rmsprop"},
         "adadelta": {"optim.name": "adadelta"}}),
    "activations": (
        {"leaky_relu": 89.45, "relu": 89.31, "elu": 87.45}, {**CNN3, "train.epochs": 50, "loss.name": "cross_entropy"},
        {"leaky_relu": {"model.options.activation": "leaky_relu"}, "elu": {"model.options.activation": "elu"}}),
    "losses": (
        {"cross_entropy": 88.42, "label_smoothing": 89.61, "focal": 87.61, "mse": 90.03}, CNN3,
        {"cross_entropy": {"train.epochs": 50}, "label_smoothing": {"train.epochs": 75, "loss.label_smoothing": 0.1},
         "focal": {"train.epochs": 50, "loss.focal_gamma": 2.0}, "mse": {"train.epochs": 100, "loss.name": "mse"}}),
    "cnn3_optimizers": (
        {"adam": 88.42, "sgd": 78.58, "signum": 82.64}, {**CNN3, "optim.name": None, "optim.lr": None,
                                                           "train.epochs": 50},
        {"adam": {"optim.name": "adam"}, "sgd": {"optim.name": "sgd"}, "signum": {"optim.name": "signum"}}),
    "schedulers": (
        {"step": 88.53, "plateau": 88.44, "cosine": 88.98},
        {**CNN3, "train.epochs": 50, "model.options.filters": [128, 256, 512], "loss.name": "label_smoothing",
         "loss.label_smoothing": 0.1, "optim.l1": 1e-5, "optim.grad_clip": 5.0, "sched.step_size": 20,
         "sched.gamma": 0.1, "sched.plateau_factor": 0.2, "sched.plateau_patience": 3,
         "sched.plateau_threshold": 1e-3, "sched.plateau_cooldown": 2},
        {"step": {"sched.name": "step"}, "plateau": {"sched.name": "plateau"}, "cosine": {"sched.name": "cosine"}}),
    "cnn3_best": (
        {"best": 91.53}, {**CNN3, "optim.lr": 2e-3, "model.options.filters": [128, 256, 512],
                          "loss.label_smoothing": 0.15, "sched.name": "cosine", "train.epochs": 100}, {}),
    "cnn3_swa": ({"no_swa": 88.42, "swa": 85.17}, {**CNN3, "train.epochs": 50},
                 {"swa": {"train.swa_start_epoch": 38}, "no_swa": {"train.swa_start_epoch": None}}),
    "resnet3stage_best": (
        {"swish": 95.22}, {"model.name": "resnet3stage", "optim.name": "adamw", "train.epochs": 200},
        {"swish": {"model.options.activation": "swish"}, "mish": {"model.options.activation": "mish"}}),
    "cnn_family": (
        {"basic_cnn": 82.91, "improved_cnn": 92.61, "residual_cnn": 91.57},
        {"optim.name": "adamw", "optim.lr": 1e-3, "optim.weight_decay": 5e-4, "augment.crop_padding": 4,
         "augment.flip": True, "train.early_stopping.patience": 6, "train.early_stopping.monitor": "val_acc",
         "sched.name": "constant"},
        {"improved_cnn": {"loss.name": "label_smoothing", "loss.label_smoothing": 0.1},
         "basic_cnn": {"loss.name": "cross_entropy"}}),
}


def _get(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("name", sorted(TABLES))
def test_full_scale_is_the_reports_protocol(name):
    numbers, common, per_variant = TABLES[name]
    spec = load_spec(name, scale="full")
    table = spec.report_table
    assert table["report"] and table["table"] and table.get("reading")
    assert table.get("rows", {}) == (numbers or {})
    if numbers is None:
        assert table["order"]
    plans = {p.label: p.config for p in expand(spec) if p.seed == spec.seeds[0]}
    assert set(per_variant) <= set(plans)
    for label, config in plans.items():
        for key, value in {**common, **per_variant.get(label, {})}.items():
            if value is None and key not in per_variant.get(label, {}):
                continue  # differs per variant: checked there
            got = _get(config, key)
            if key == "model.options":
                assert {k: got.get(k) for k in value} == value, (label, key, got)
            else:
                assert got == pytest.approx(value) if isinstance(value, float) else got == value, (label, key, got)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_quick_scale_builds_every_model(name):
    from cifarlab.models.registry import create

    for plan in expand(load_spec(name, scale="quick")):
        if plan.seed == plan.cfg.train.seed and plan.cfg.model.name not in ("densenet121", "dla", "dpn26",
                                                                            "resnext50_32x4d"):
            create(plan.cfg.model.name, **plan.cfg.model.options)


def test_every_report_table_has_a_preset_and_every_preset_says_what_it_reproduces():
    assert set(TABLES) <= set(list_experiment_presets())
    tables = {(load_spec(n).report_table.get("report"), load_spec(n).report_table.get("table")) for n in TABLES}
    assert len(tables) == len(TABLES)  # one preset per table


def _runs(accs: dict[str, list[float]]) -> list[RunRecord]:
    return [RunRecord(v, s, None, "completed", summary={"test_acc": a / 100, "final_val_acc": a / 100})  # type: ignore[arg-type]
            for v, values in accs.items() for s, a in enumerate(values)]


def test_ordering_verdict_agrees_disagrees_and_is_inconclusive():
    ref = {"report": "r", "table": "t", "rows": {"a": 90.0, "b": 80.0, "c": 70.0}}
    agree = aggregate(_runs({"a": [91, 91.2], "b": [85, 85.1], "c": [60, 60.3]}))
    assert "**agrees** (3 agree, 0 disagree, 0 inconclusive, of 3 ranked pairs" in ordering_verdict(agree, ref)
    swapped = aggregate(_runs({"a": [80, 80.1], "b": [90, 90.2], "c": [60, 60.3]}))
    assert "**disagrees** (2 agree, 1 disagree" in ordering_verdict(swapped, ref)
    overlap = aggregate(_runs({"a": [85, 91], "b": [86, 88], "c": [60, 60.3]}))
    assert "**inconclusive** (2 agree, 0 disagree, 1 inconclusive" in ordering_verdict(overlap, ref)
    one_seed = aggregate(_runs({"a": [91], "b": [85], "c": [60]}))
    assert "**inconclusive** (0 agree, 0 disagree, 3 inconclusive, of 3 ranked pairs; by means alone, 3 of 3" \
        in ordering_verdict(one_seed, ref)
    ties = {"report": "r", "table": "t", "order": ["a", ["b", "c"]]}  # ranking only; b and c tie
    assert "of 2 ranked pairs" in ordering_verdict(agree, ties)


def test_reference_rows_put_ours_beside_theirs():
    ref = {"report": "r", "table": "t", "rows": {"a": 90.0, "b": 80.0, "missing": 70.0}}
    header, rows = reference_rows(aggregate(_runs({"a": [91, 93], "b": [85, 85]})), ref)
    assert header[:4] == ["variant", "theirs test acc (%)", "their rank", "ours test acc (%)"]
    assert rows[0] == ["a", "90.00", "1", "92.00 ± 1.41", "1", "+2.00", "2"]
    assert rows[2] == ["missing", "70.00", "3", "-", "-", "-", "0"]


def test_results_md_prints_the_reference_table(tmp_path):
    import json

    import yaml

    from cifarlab.experiments.compare import write_results

    ref = {"report": "MyNet report", "table": "t", "rows": {"a": 60.0, "b": 50.0}, "reading": "as printed"}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"name": "x", "report_table": ref}))
    rows = []
    for v, acc in (("a", 0.7), ("b", 0.6)):
        (tmp_path / v).mkdir()
        (tmp_path / v / "summary.json").write_text(json.dumps({"status": "completed", "test_acc": acc,
                                                               "final_val_acc": acc}))
        rows.append({"variant": v, "seed": 0, "run_dir": v, "status": "completed"})
    (tmp_path / "sweep_status.json").write_text(json.dumps({"runs": rows}))
    md = write_results(tmp_path)[0].read_text()
    assert "## Ours beside theirs: MyNet report, t" in md and "| a | 60.00 | 1 | 70.00 | 1 | +10.00 | 1 |" in md
    assert "**inconclusive**" in md and "Reading of the report's protocol: as printed" in md


def test_report_table_is_checked():
    base = {"name": "x", "base": {"model.name": "quick_cnn"}, "variants": [{"label": "a"}]}
    with pytest.raises(ConfigError, match="report_table names variant 'zz'"):
        expand(parse_spec({**base, "report_table": {"report": "r", "table": "t", "rows": {"zz": 1.0}}}))
    with pytest.raises(ConfigError, match=r"report_table\.metric: 'acc'"):
        parse_spec({**base, "report_table": {"report": "r", "table": "t", "rows": {"a": 1.0}, "metric": "acc"}})
    with pytest.raises(ConfigError, match=r"report_table\.rows or order"):
        parse_spec({**base, "report_table": {"report": "r", "table": "t"}})


def test_sweep_list_shows_the_table_each_preset_reproduces(capsys):
    from cifarlab.cli import main

    assert main(["sweep", "--list"]) in (0, None)
    out = capsys.readouterr().out
    assert "schedulers" in out and "reproduces: 3-block CNN report: schedulers (50 epochs)" in out
    assert "reproduces: MyNet report: hand-built ResNet and VGGNet" in out
