"""What a run prints when stdout is not a terminal (phase lines with times, ETA, resume), TensorBoard's final
metrics, HParams and figures read back from the event files, and switching a preset's optimizer on the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from cifarlab import cli
from cifarlab.engine.metrics import epoch_line, flat_hparams, format_eta
from cifarlab.engine.trainer import train
from cifarlab.experiments.sweep import parse_spec, run_sweep, sweep_dir_for
from synthetic import cfg_with, synthetic_cifar

TINY_CLI = ["model.options.widths=[8,16,16]", "data.val_size=100", "train.batch_size=50", "train.device=cpu",
            "train.amp=off"]
TIMED = r" \d+\.\d s$"  # a phase line ends with its time


@pytest.fixture(scope="module")
def data():
    return synthetic_cifar(300, 100)


@pytest.fixture
def fake_data(monkeypatch, data):
    import cifarlab.engine.build as build_module

    monkeypatch.setattr(build_module, "load_cifar10", lambda *a, **k: data)
    return data


def test_format_eta_and_epoch_line():
    assert [format_eta(s) for s in (4.2, 192, 5400)] == ["4 s", "3.2 min", "1.5 h"]
    row = {"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": float("nan"), "val_acc": float("nan"),
           "lr": 0.1, "seconds": 2.0}
    assert epoch_line(row, 4, 192.0) == "epoch   1/4  train_loss 1.0000 train_acc 50.00 %  lr 0.1  2.0s  ETA 3.2 min"
    validated = {**row, "val_loss": 0.75, "val_acc": 0.61234}
    assert "val_loss 0.7500 val_acc 61.23 %" in epoch_line(validated, 4)
    assert "ETA" not in epoch_line(row, 4)


def test_cli_train_prints_phases_in_order_with_times(tmp_path, fake_data, capsys):
    code = cli.main(["train", *TINY_CLI, "train.epochs=3", "train.tta=flip", "--out", str(tmp_path), "--name", "r"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()  # capsys: stdout is not a terminal, as in a log file
    want = [r"^run r: quick_cnn on cpu, ", r"^building model quick_cnn \.\.\. 3,922 parameters," + TIMED,
            r"^loading data \.\.\. 200 train / 100 val / 100 test images \(synthetic\)," + TIMED,
            r"^epoch   1/3 .* ETA \d", r"^epoch   2/3 .* ETA \d", r"^epoch   3/3 .*\ds$",
            r"^evaluating test \(100 images, TTA flip\) \.\.\. test_acc \d{1,3}\.\d{2} %," + TIMED,
            r"^evaluating without TTA \(what TTA adds\) \.\.\. test_acc \d{1,3}\.\d{2} %," + TIMED]
    found = [next(i for i, line in enumerate(lines) if re.search(w, line)) for w in want]
    assert found == sorted(found) and found[0] == 0, lines
    assert not any("ETA" in line for line in lines if line.startswith("epoch   3/3"))


def test_quiet_prints_no_progress_lines(tmp_path, fake_data, capsys):
    assert cli.main(["train", *TINY_CLI, "train.epochs=1", "--out", str(tmp_path), "--name", "q", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "building model" not in out and "epoch " not in out and "test loss / acc" in out  # the table stays


def test_compile_phase_is_announced(tmp_path, data, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch, "compile", lambda model: model)  # the line, not the compiler, is under test
    train(cfg_with("train.epochs=1", "train.compile=true"), tmp_path / "c", data=data, progress=None)
    assert re.search(r"^compiling model \(torch\.compile\) \.\.\. lazy.*" + TIMED, capsys.readouterr().out, re.M)


def test_resume_says_from_which_epoch(tmp_path, data, capsys):
    from cifarlab.engine.callbacks import EpochEndFunction

    def interrupt(epoch: int, row: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    cfg = cfg_with("train.epochs=3")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "r", data=data, progress=None, callbacks=[EpochEndFunction(interrupt)])
    capsys.readouterr()
    train(cfg, tmp_path / "r", resume=True, data=data, progress=None)
    out = capsys.readouterr().out
    last = tmp_path / "r" / "checkpoints" / "last.pt"
    assert f"resuming from epoch 2 (checkpoint {last}); 1 of 3 epochs to go" in out
    assert "epoch   3/3" in out and "epoch   1/3" not in out
    train(cfg, tmp_path / "r", resume=True, data=data, progress=None)
    assert "already finished (completed); nothing to do" in capsys.readouterr().out


def test_sweep_prints_each_runs_label_before_its_lines(tmp_path, data, capsys):
    spec = parse_spec({"name": "lab", "base": {"model": {"name": "quick_cnn", "options": {"widths": [8, 16, 16]}},
                                               "data.val_size": 100, "train": {"batch_size": 50, "epochs": 2}},
                       "axes": {"optim.lr": [0.05, 0.1]}, "seeds": [0]})
    logged: list[str] = []
    run_sweep(spec, tmp_path, data=data, progress=None, log=logged.append, outputs=False)
    lines = capsys.readouterr().out.splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith("run ")]
    assert [lines[i].split(":")[0] for i in heads] == ["run lr=0.05-seed0", "run lr=0.1-seed0"]
    assert heads[0] == 0
    for start, end in zip(heads, [*heads[1:], len(lines)]):  # each run's epoch lines sit under its own label
        assert [line[:12] for line in lines[start:end] if line.startswith("epoch")] == ["epoch   1/2 ", "epoch   2/2 "]
    assert logged.index("[1/2] lr=0.05/seed0: starting") < logged.index("lr=0.05/seed0: completed") \
        < logged.index("[2/2] lr=0.1/seed0: starting")


# -- TensorBoard ----------------------------------------------------------------------------------------------


def _events(run_dir):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'cifarlab[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def _session_hparams(acc) -> dict:
    from tensorboard.plugins.hparams import metadata

    content = acc.PluginTagToContent("hparams")
    assert metadata.EXPERIMENT_TAG in content and metadata.SESSION_END_INFO_TAG in content
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}


def test_tensorboard_final_metrics_hparams_and_figures(tmp_path, data):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'cifarlab[tensorboard]')")
    cfg = cfg_with("train.epochs=2", "train.tta=flip", "tensorboard=true")
    summary = train(cfg, tmp_path / "tb", data=data, progress=False)
    assert summary == json.loads((tmp_path / "tb" / "summary.json").read_text())
    acc = _events(tmp_path / "tb")
    for key in ("test_acc", "test_loss", "test_acc_no_tta", "final_val_acc", "best_val_acc"):
        (event,) = acc.Scalars(f"final/{key}")
        assert event.value == np.float32(summary[key]) and event.step == summary["steps"], key  # float32 there
    per_epoch = summary["steps"] // 2  # one axis, the optimizer step: epoch rows sit at the step ending the epoch
    assert [e.step for e in acc.Scalars("epoch/val_acc")] == [per_epoch, 2 * per_epoch]
    assert [e.step for e in acc.Scalars("step/loss")] == list(range(1, summary["steps"] + 1))
    hparams = _session_hparams(acc)
    assert hparams["optim.lr"] == 0.05 and hparams["model.name"] == "quick_cnn" and hparams["train.tta"] == "flip"
    assert hparams["model.options.widths"] == "[8, 16, 16]" and "data.dir" not in hparams
    (image,) = acc.Images("figures/lr")  # lr.png, the run's figure
    assert image.width > 100 and image.height > 100


def test_tensorboard_resume_purges_what_a_killed_run_logged_after_its_checkpoint(tmp_path, data):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'cifarlab[tensorboard]')")
    import shutil

    run = tmp_path / "tb"
    train(cfg_with("train.epochs=1", "tensorboard=true"), run, data=data, progress=False)
    kept = tmp_path / "epoch1.pt"
    shutil.copy(run / "checkpoints" / "last.pt", kept)
    summary = train(cfg_with("train.epochs=2", "tensorboard=true"), run, resume=True, data=data, progress=False)
    # A run killed just before its epoch-2 checkpoint: epoch 2's events are on disk, last.pt says epoch 1.
    shutil.copy(kept, run / "checkpoints" / "last.pt")
    (run / "summary.json").unlink()
    again = train(cfg_with("train.epochs=2", "tensorboard=true"), run, resume=True, data=data, progress=False)
    assert again["test_acc"] == summary["test_acc"]
    acc = _events(run)
    steps = [e.step for e in acc.Scalars("step/loss")]
    assert steps == list(range(1, summary["steps"] + 1))  # each step once, not epoch 2's twice
    assert [e.step for e in acc.Scalars("epoch/train_loss")] == [summary["steps"] // 2, summary["steps"]]


def test_tensorboard_sweep_runs_are_hparams_rows(tmp_path, data):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'cifarlab[tensorboard]')")
    spec = parse_spec({"name": "tb", "base": {"model": {"name": "quick_cnn", "options": {"widths": [8, 16, 16]}},
                                              "data.val_size": 100, "train": {"batch_size": 50, "epochs": 1},
                                              "tensorboard": True},
                       "axes": {"optim.lr": [0.05, 0.1]}, "seeds": [0]})
    run_sweep(spec, tmp_path, data=data, outputs=False)
    sweep = sweep_dir_for(spec, tmp_path)
    # Each run's tensorboard/ folder is one session under the sweep folder (`tensorboard --logdir <sweep>`).
    lrs = [_session_hparams(_events(sweep / f"lr={lr}" / "seed0"))["optim.lr"] for lr in ("0.05", "0.1")]
    assert lrs == [0.05, 0.1]


def test_flat_hparams_are_scalars_without_bookkeeping():
    flat = flat_hparams({"name": "x", "data": {"dir": "/d", "val_size": 10}, "optim": {"eps": None, "lr": 0.1},
                         "model": {"options": {"widths": [8, 16]}}})
    assert flat == {"data.val_size": 10, "optim.eps": "null", "optim.lr": 0.1, "model.options.widths": "[8, 16]"}


# -- switching the optimizer of a preset ----------------------------------------------------------------------

QUICK_TINY = ["--preset", "quick", "model.options.widths=[8,16,16]", "data.val_size=100", "train.batch_size=50",
              "train.eval_batch_size=100", "train.epochs=1", "train.device=cpu", "--quiet"]


def test_cli_switch_preset_to_adam_runs_and_says_what_was_dropped(tmp_path, fake_data, capsys):
    code = cli.main(["train", *QUICK_TINY, "optim.name=adam", "--out", str(tmp_path), "--name", "a"])
    err = capsys.readouterr().err
    assert code == 0, err
    dropped = [line for line in err.splitlines() if "dropped" in line]
    assert dropped == ["cifarlab: optim.name=adam (was sgd): dropped optim.momentum=0.85, optim.nesterov=true, "
                       "which adam does not take"]
    saved = (tmp_path / "a" / "config.yaml").read_text()
    assert "name: adam" in saved and "nesterov: false" in saved


def test_cli_explicit_setting_the_optimizer_does_not_take_is_one_clear_error(tmp_path, fake_data, capsys):
    code = cli.main(["train", *QUICK_TINY, "optim.nesterov=true", "optim.name=adam", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "cifarlab: error: config key 'optim.nesterov': true applies to sgd, scratch_sgd or muon only (optim.name "
        "is 'adam'); leave optim.nesterov out (or set optim.nesterov=false), or use optim.name=sgd"]
    assert not any(tmp_path.iterdir())
