"""Sweeps on synthetic data: expansion and up-front validation, resumability after an interruption, failure
recording, the comparison table (checked against the runs' own summaries), figures, CLI, Ray, presets."""

from __future__ import annotations

import argparse
import csv
import json
import statistics

import pytest
import torch

from cifarlab.commands.experiments import add_sweep_parser, cmd_sweep
from cifarlab.config import to_dict
from cifarlab.data import CifarArrays
from cifarlab.errors import ConfigError
from cifarlab.experiments.executors import ray_available
from cifarlab.experiments.sweep import (
    expand,
    list_experiment_presets,
    load_spec,
    parse_spec,
    run_sweep,
    sweep_dir_for,
)


def tiny_data(n_train: int = 300, n_test: int = 100, seed: int = 0) -> CifarArrays:
    """Class k = a bright square of class-specific colour on noise (learnable within an epoch or two)."""
    g = torch.Generator().manual_seed(seed)
    palette = torch.tensor([[250, 30, 30], [30, 250, 30], [30, 30, 250], [250, 250, 30], [250, 30, 250],
                            [30, 250, 250], [250, 250, 250], [140, 30, 30], [30, 140, 30], [30, 30, 140]],
                           dtype=torch.uint8)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 10
        x = torch.randint(0, 100, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        x[:, :, 8:20, 8:20] = palette[y].view(n, 3, 1, 1)
        return x, y.long()

    return CifarArrays(*make(n_train), *make(n_test), source="synthetic")


TINY_BASE = {
    "model": {"name": "quick_cnn", "options": {"widths": [8, 16, 16]}},
    "data.val_size": 100,
    "augment.crop_padding": 2,
    "train": {"batch_size": 50, "eval_batch_size": 100, "epochs": 2},
    "sched.name": "cosine",
}


def tiny_spec(name: str = "tiny", **extra) -> dict:
    # activation=bogus passes up-front validation (option *names* are checked, values only when the model is
    # built) and fails at run time: the deliberately failing variant.
    spec = {"name": name, "base": TINY_BASE, "axes": {"model.options.activation": ["relu", "elu", "bogus"],
                                                      "optim.lr": [0.05]}, "seeds": [0, 1]}
    spec.update(extra)
    return spec


@pytest.fixture(scope="module")
def data() -> CifarArrays:
    return tiny_data()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data):
    """Run the tiny sweep, interrupted in the middle (KeyboardInterrupt at the end of one run's epoch 1), then
    lose one finished run's summary.json, then re-run it; record which epochs the second pass trained."""
    out = tmp_path_factory.mktemp("sweeps")
    spec = parse_spec(tiny_spec())
    victim = "activation=elu,lr=0.05/seed0"

    def interrupt(plan, epoch, row):
        if plan.rel_dir == victim and epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out, data=data, on_epoch_end=interrupt)
    sweep_dir = sweep_dir_for(spec, out)
    first = json.loads((sweep_dir / "sweep_status.json").read_text())
    kept = sweep_dir / "activation=relu,lr=0.05/seed0/summary.json"
    kept_mtime = kept.stat().st_mtime_ns
    (sweep_dir / "activation=relu,lr=0.05/seed1/summary.json").unlink()  # finished, but its summary is lost

    trained: dict[str, list[int]] = {}
    result = run_sweep(spec, out, data=data,
                       on_epoch_end=lambda plan, epoch, row: trained.setdefault(plan.rel_dir, []).append(epoch))
    return {"dir": sweep_dir, "first": first, "result": result, "trained": trained,
            "kept_unchanged": kept.stat().st_mtime_ns == kept_mtime}


def test_expand_labels_dirs_and_configs():
    base = {**TINY_BASE, "model": {"name": "quick_cnn"}}
    spec = parse_spec(tiny_spec(base=base, variants=[{"label": "vgg", "model.name": "vgg_a_light"},
                                                     {"model.options.widths": [8, 8, 8]}]))
    plans = expand(spec)
    assert len(plans) == 2 * 3 * 2
    assert plans[0].label == "vgg,activation=relu,lr=0.05" and plans[0].rel_dir.endswith("/seed0")
    assert plans[-1].label == "widths=8x8x8,activation=bogus,lr=0.05" and plans[-1].seed == 1
    assert plans[-1].rel_dir == "widths=8x8x8,activation=bogus,lr=0.05/seed1"
    assert plans[-1].cfg.model.options == {"widths": [8, 8, 8], "activation": "bogus"}
    cfg = plans[1].cfg
    assert cfg.model.name == "vgg_a_light" and cfg.train.seed == 1 and cfg.model.options == {"activation": "relu"}
    assert cfg.train.epochs == 2 and cfg.data.val_size == 100


def test_base_preset_overrides_and_scales():
    raw = {"name": "s", "base": {"preset": "quick_cnn", "overrides": {"optim.lr": 0.01}, "train": {"epochs": 3}},
           "scales": {"quick": {"data.subset": 1000}, "full": {"train.epochs": 30}}, "scale": "quick",
           "axes": {"loss.name": ["cross_entropy", "nll"]}}
    quick = expand(parse_spec(raw))
    assert quick[0].cfg.optim.lr == 0.01 and quick[0].cfg.train.epochs == 3 and quick[0].cfg.data.subset == 1000
    assert quick[0].cfg.optim.nesterov is True  # from the quick preset
    assert quick[0].cfg.preset == "quick_cnn"  # recorded, as `cifarlab train --preset` records it (report: settings)
    assert expand(parse_spec({**raw, "base": {"preset": "fast-cpu"}}))[0].cfg.preset == "fast_cpu"
    full = expand(parse_spec(raw, scale="full"))
    assert full[0].cfg.train.epochs == 30 and full[0].cfg.data.subset is None
    assert sweep_dir_for(parse_spec(raw), "o").name == "s-quick"  # scales never share a folder
    with pytest.raises(ConfigError, match="unknown scale 'huge'"):
        parse_spec(raw, scale="huge")


def test_bad_config_fails_up_front_naming_the_variant(tmp_path, data):
    spec = parse_spec(tiny_spec(axes={"optim.lr": [0.05, -1.0]}))
    with pytest.raises(ConfigError, match=r"sweep variant 'lr=-1'.*optim.lr"):
        run_sweep(spec, tmp_path, data=data)
    assert not any(tmp_path.iterdir())  # nothing ran, nothing written
    with pytest.raises(ConfigError, match=r"variant 'lrr=1'.*unknown config key 'optim.lrr'"):
        expand(parse_spec(tiny_spec(axes={"optim.lrr": [1]})))
    with pytest.raises(ConfigError, match="has no option 'widthz'"):
        expand(parse_spec(tiny_spec(axes={"model.options.widthz": [1]})))
    with pytest.raises(ConfigError, match="unknown sweep key 'axis'"):
        parse_spec({"name": "x", "axis": {}})


def test_interrupted_sweep_resumes_only_what_is_missing(sweep):
    first = {r["run_dir"]: r["status"] for r in sweep["first"]["runs"]}
    assert sweep["first"]["state"] == "interrupted"
    assert first["activation=relu,lr=0.05/seed0"] == "completed"
    assert first["activation=elu,lr=0.05/seed0"] == "interrupted"
    assert first["activation=elu,lr=0.05/seed1"] == "pending"
    # Second pass: the finished run is skipped (summary untouched), the interrupted one trains only epoch 2,
    # the lost summary is rebuilt from last.pt without training, never-started runs train both epochs.
    assert sweep["kept_unchanged"]
    assert sweep["trained"] == {"activation=elu,lr=0.05/seed0": [2], "activation=elu,lr=0.05/seed1": [1, 2]}
    relu1 = json.loads((sweep["dir"] / "activation=relu,lr=0.05/seed1/summary.json").read_text())
    assert relu1["status"] == "completed" and relu1["epochs_run"] == 2


def test_failures_are_recorded_and_the_sweep_goes_on(sweep):
    result = sweep["result"]
    assert [r["run_dir"] for r in result.failed] == ["activation=bogus,lr=0.05/seed0", "activation=bogus,lr=0.05/seed1"]
    assert all(r["status"] == "failed" and "unknown activation 'bogus'" in r["error"] for r in result.failed)
    status = json.loads((sweep["dir"] / "sweep_status.json").read_text())
    assert status["state"] == "finished" and len(status["runs"]) == 6
    with (sweep["dir"] / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["completed"] * 4 + ["failed"] * 2
    assert "\n" not in rows[-1]["error"]


def test_table_matches_the_runs_summaries(sweep):
    with (sweep["dir"] / "results.csv").open() as f:
        table = {r["variant"]: r for r in csv.DictReader(f)}
    assert list(table) == ["activation=relu,lr=0.05", "activation=elu,lr=0.05", "activation=bogus,lr=0.05"]
    for variant in ("activation=relu,lr=0.05", "activation=elu,lr=0.05"):
        summaries = [json.loads((sweep["dir"] / variant / f"seed{s}" / "summary.json").read_text()) for s in (0, 1)]
        row = table[variant]
        assert row["n_ok"] == "2" and int(row["params"]) == summaries[0]["params"]
        for key in ("test_acc", "final_val_acc", "final_train_loss", "train_time_s", "best_epoch"):
            vals = [s[key] for s in summaries]
            assert float(row[f"{key}_mean"]) == pytest.approx(statistics.mean(vals), rel=1e-5, abs=1e-9)
            assert float(row[f"{key}_std"] or 0) == pytest.approx(statistics.stdev(vals), rel=1e-5, abs=1e-9)
            assert row[f"{key}_n"] == "2"
    assert table["activation=bogus,lr=0.05"]["n_ok"] == "0"
    md = (sweep["dir"] / "results.md").read_text()
    relu = [json.loads((sweep["dir"] / "activation=relu,lr=0.05" / f"seed{s}" / "summary.json").read_text())
            for s in (0, 1)]
    acc = [100 * s["test_acc"] for s in relu]
    assert f"{statistics.mean(acc):.2f} ± {statistics.stdev(acc):.2f}" in md
    assert "activation=bogus,lr=0.05 seed 1: failed" in md
    assert "no TTA" not in md  # these runs have no test-time augmentation: no empty no-TTA columns


def test_no_tta_columns_appear_when_runs_have_them(tmp_path):
    from cifarlab.experiments.compare import RunRecord, aggregate, table_rows

    runs = [RunRecord("tta", s, tmp_path, "completed", summary={"test_acc": a, "test_acc_no_tta": b,
                                                                "val_acc_no_tta": b, "final_val_acc": a})
            for s, (a, b) in enumerate([(0.91, 0.90), (0.93, 0.90)])]
    header, rows = table_rows(aggregate(runs))
    assert header[-2:] == ["val acc, no TTA (%)", "test acc, no TTA (%)"]
    assert rows[0][-1] == "90.00 ± 0.00" and rows[0][header.index("test acc (%)")] == "92.00 ± 1.41"


def test_figures_written(sweep):
    figs = sorted(p.name for p in (sweep["dir"] / "figures").iterdir())
    assert figs == ["confusion.png", "convergence.png", "lr.png", "test_accuracy.png"]
    for name in figs:
        assert (sweep["dir"] / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _sweep_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cifarlab")
    add_sweep_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["sweep", *argv])


def test_cli_dry_run_lists_actions(sweep, tmp_path, capsys):
    spec_file = tmp_path / "tiny.yaml"
    import yaml

    spec_file.write_text(yaml.safe_dump(tiny_spec()))
    assert cmd_sweep(_sweep_args(str(spec_file), "--out", str(sweep["dir"].parent), "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "6 runs" in out and out.count("skip (finished)") == 4 and out.count("start") == 2
    with pytest.raises(ConfigError, match="not an experiment preset"):
        cmd_sweep(_sweep_args("no_such_sweep", "--dry-run"))


def test_diverged_run_is_recorded(tmp_path, data):
    spec = parse_spec({"name": "div", "base": {**TINY_BASE, "train": {"batch_size": 50, "epochs": 1, "log_every": 1},
                                              "model.options.norm": "none", "sched.name": "constant",
                                              "optim.weight_decay": 0.0},
                       "axes": {"optim.lr": [1e12]}, "seeds": [0]})
    result = run_sweep(spec, tmp_path, data=data, outputs=False)
    assert result.runs[0]["status"] == "diverged" and "loss became" in result.runs[0]["error"]


@pytest.mark.skipif(not ray_available(), reason="ray extra not installed")
def test_ray_executor(tmp_path, data):
    spec = parse_spec({"name": "ray", "base": {**TINY_BASE, "train": {"batch_size": 50, "epochs": 1}},
                       "axes": {"model.options.activation": ["relu", "bogus"]}, "seeds": [0]})
    result = run_sweep(spec, tmp_path, data=data, executor="ray", cpus_per_run=1, outputs=False)
    status = {r["run_dir"]: r["status"] for r in result.runs}
    assert status == {"activation=relu/seed0": "completed", "activation=bogus/seed0": "failed"}
    summary = json.loads((result.sweep_dir / "activation=relu/seed0/summary.json").read_text())
    assert summary["status"] == "completed" and summary["data_source"] == "synthetic"


@pytest.mark.parametrize("name", list_experiment_presets())
@pytest.mark.parametrize("scale", ["quick", "full"])
def test_experiment_presets_expand_and_validate(name, scale):
    spec = load_spec(name, scale=scale)
    assert spec.description and spec.reference
    plans = expand(spec)  # validates every config, model name and option name
    assert plans and len({p.rel_dir for p in plans}) == len(plans)
    for plan in plans:
        assert to_dict(plan.cfg) == plan.config  # a fixed point of the schema's loader: nothing dropped


def test_experiment_presets_exist():
    assert {"activations", "losses", "optimizers", "schedulers", "mynet", "init", "vgg_family", "cnn_family",
            "model_zoo"} <= set(list_experiment_presets())


def test_cli_exit_code_and_failure_listing(tmp_path, data, monkeypatch, capsys):
    import yaml

    import cifarlab.experiments.sweep as sweep_module

    monkeypatch.setattr(sweep_module, "_load_data", lambda cfg, data_dir, progress: data)  # no CIFAR-10 here
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text(yaml.safe_dump({"name": "bad", "base": TINY_BASE,
                                         "axes": {"model.options.activation": ["bogus"]}, "seeds": [0]}))
    assert cmd_sweep(_sweep_args(str(spec_file), "--out", str(tmp_path / "o"), "--quiet")) == 1
    err = capsys.readouterr().err
    assert "1 run(s) did not finish" in err and "activation=bogus/seed0: failed" in err


@pytest.mark.parametrize("raw, fragment", [
    ({"name": "x", "seeds": "a"}, "sweep key 'seeds'"),
    ({"name": "x", "seeds": [1, 1]}, "'seeds' has duplicates"),
    ({"name": "x", "axes": {"optim.lr": 0.1}}, "'axes' must map"),
    ({"name": "x", "variants": ["lr=1"]}, "sweep key 'variants[0]'"),
    ({"name": "a/b"}, "'name' must be a non-empty folder name"),
    ({"name": "x", "description": ["not", "text"]}, "sweep key 'description'"),
])
def test_sweep_file_is_checked_by_the_config_builder(raw, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        parse_spec(raw)


def test_temporaries_left_by_a_killed_sweep_are_removed_on_resume(tmp_path):
    # A SIGKILL between an atomic write's mkstemp and its rename leaves '.<name>.<random>.tmp' behind (the fault
    # injection test caught one beside sweep_status.json); the next run of the sweep clears them.
    spec = parse_spec({"name": "strays", "base": {**TINY_BASE, "train": {**TINY_BASE["train"], "epochs": 1}},
                       "axes": {"optim.lr": [0.05]}, "seeds": [0]})
    sweep_dir = sweep_dir_for(spec, tmp_path)
    (sweep_dir / "figures").mkdir(parents=True)
    strays = [sweep_dir / ".sweep_status.json.jyw85xn5.tmp", sweep_dir / "figures" / ".convergence.png.ab12cd.tmp"]
    for p in strays:
        p.write_text("half")
    keep = sweep_dir / "notes.tmp"  # not a temporary of ours (no leading dot): left alone
    keep.write_text("mine")
    run_sweep(spec, tmp_path, data=tiny_data())
    assert [p.exists() for p in strays] == [False, False] and keep.read_text() == "mine"
    assert json.loads((sweep_dir / "sweep_status.json").read_text())["state"] == "finished"


def test_a_second_driver_of_one_sweep_gets_one_clear_error(tmp_path):
    import os
    import socket

    spec = parse_spec({"name": "busy", "base": TINY_BASE, "axes": {"optim.lr": [0.05]}, "seeds": [0]})
    sweep_dir = sweep_dir_for(spec, tmp_path)
    sweep_dir.mkdir(parents=True)
    # A live process (this one's parent) owns the sweep: nothing may be written beside it.
    (sweep_dir / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid()}))
    from cifarlab.errors import CheckpointError

    with pytest.raises(CheckpointError, match=rf"'{sweep_dir}' is in use by process {os.getppid()}"):
        run_sweep(spec, tmp_path, data=tiny_data())
    assert sorted(p.name for p in sweep_dir.iterdir()) == [".lock"]
