"""Training engine on synthetic, learnable data: outputs, determinism, resume equivalence, early stopping,
divergence, evaluation. Tiny model, a few hundred images: each test takes seconds."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from cifarlab.engine.checkpoint import load_checkpoint
from cifarlab.engine.evaluate import evaluate_checkpoint
from cifarlab.engine.trainer import train
from cifarlab.errors import CheckpointError
from cifarlab.models import create
from cifarlab.models.summary import count_params
from synthetic import cfg_with, synthetic_cifar, train_interrupted_then_resumed


@pytest.fixture(scope="module")
def data():
    return synthetic_cifar()


def test_run_directory_contents_and_learning(tmp_path, data):
    cfg = cfg_with("train.epochs=4")
    summary = train(cfg, tmp_path / "run", data=data, progress=False)
    run = tmp_path / "run"
    for name in ("config.yaml", "env.json", "steps.csv", "epochs.csv", "summary.json",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert summary == json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["train_images"] == 500 and summary["val_images"] == 100 and summary["test_images"] == 200
    model = create("quick_cnn", widths=[8, 16, 16])
    assert summary["params"] == count_params(model)  # trainable only
    assert summary["params_total"] == sum(p.numel() for p in model.parameters())
    assert summary["macs"] > 0
    assert summary["test_acc"] > 0.8  # chance is 0.1
    assert summary["epochs_run"] == 4 and summary["steps"] == 4 * 10
    assert sum(sum(r) for r in summary["confusion"]) == 200
    with (run / "steps.csv").open() as f:
        steps = list(csv.DictReader(f))
    assert [int(r["step"]) for r in steps] == list(range(1, 41))
    with (run / "epochs.csv").open() as f:
        epochs = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in epochs] == [1, 2, 3, 4]
    assert float(epochs[-1]["train_loss"]) < float(epochs[0]["train_loss"])
    env = json.loads((run / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 4 and state["step"] == 40


def test_logged_lr_follows_schedule(tmp_path, data):
    summary = train(cfg_with("train.epochs=2", "sched.name=step", "sched.step_size=1", "sched.gamma=0.5"),
                    tmp_path / "r", data=data, progress=False)
    with (tmp_path / "r" / "steps.csv").open() as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    assert lrs == [0.05] * 10 + [0.025] * 10
    assert summary["status"] == "completed"


def _weights(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def _strip_seconds(path):
    with path.open() as f:
        return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in csv.DictReader(f)]


def test_same_seed_same_numbers(tmp_path, data):
    cfg = cfg_with("train.epochs=2", "model.options.dropout=0.2")
    a = train(cfg, tmp_path / "a", data=data, progress=False)
    b = train(cfg, tmp_path / "b", data=data, progress=False)
    assert a["test_loss"] == b["test_loss"] and a["final_train_loss"] == b["final_train_loss"]
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = train(cfg_with("train.epochs=2", "model.options.dropout=0.2", "train.seed=1"), tmp_path / "c",
              data=data, progress=False)
    assert c["final_train_loss"] != a["final_train_loss"]


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, data):
    cfg = cfg_with("train.epochs=3", "model.options.dropout=0.1", "augment.cutout=8")
    full = train(cfg, tmp_path / "full", data=data, progress=False)

    resumed = train_interrupted_then_resumed(cfg, tmp_path / "part", data)

    for key in ("test_loss", "test_acc", "final_train_loss", "final_val_acc", "best_epoch", "steps"):
        assert resumed[key] == full[key], key
    wf, wr = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    assert _strip_seconds(tmp_path / "part" / "steps.csv") == _strip_seconds(tmp_path / "full" / "steps.csv")
    assert _strip_seconds(tmp_path / "part" / "epochs.csv") == _strip_seconds(tmp_path / "full" / "epochs.csv")


def test_resume_of_finished_run_does_not_touch_test_set_again(tmp_path, data):
    cfg = cfg_with("train.epochs=1")
    first = train(cfg, tmp_path / "r", data=data, progress=False)
    mtime = (tmp_path / "r" / "summary.json").stat().st_mtime_ns
    again = train(cfg, tmp_path / "r", resume=True, data=data, progress=False)
    assert again == first
    assert (tmp_path / "r" / "summary.json").stat().st_mtime_ns == mtime


def test_resume_can_extend_epochs_but_not_change_config(tmp_path, data):
    train(cfg_with("train.epochs=1"), tmp_path / "r", data=data, progress=False)
    longer = train(cfg_with("train.epochs=2"), tmp_path / "r", resume=True, data=data, progress=False)
    assert longer["epochs_run"] == 2
    with pytest.raises(CheckpointError, match="another config"):
        train(cfg_with("train.epochs=3", "optim.lr=0.5"), tmp_path / "r", resume=True, data=data, progress=False)


def test_existing_run_dir_is_not_overwritten(tmp_path, data):
    train(cfg_with("train.epochs=1"), tmp_path / "r", data=data, progress=False)
    with pytest.raises(CheckpointError, match="already holds a run; pass --resume"):
        train(cfg_with("train.epochs=1"), tmp_path / "r", data=data, progress=False)


def test_early_stopping_and_best_weights(tmp_path, data):
    # LR so small that validation accuracy soon stops improving.
    cfg = cfg_with("train.epochs=30", "optim.lr=1e-6", "sched.name=constant", "train.early_stopping.patience=2",
                   "train.test_weights=best")
    summary = train(cfg, tmp_path / "r", data=data, progress=False)
    assert summary["status"] == "early_stopped"
    assert summary["epochs_run"] == summary["best_epoch"] + 2 < 30
    best = load_checkpoint(tmp_path / "r" / "checkpoints" / "best.pt")
    assert best["epoch"] == summary["best_epoch"]
    assert summary["test_weights"] == "best"
    # eval of the best checkpoint reproduces the test accuracy the run reported
    result = evaluate_checkpoint_on(tmp_path / "r", "best", data)
    assert result == pytest.approx(summary["test_acc"])


def evaluate_checkpoint_on(run_dir, weights, data, monkeypatch=None):
    import cifarlab.engine.build as ev

    original = ev.load_cifar10
    ev.load_cifar10 = lambda *a, **k: data
    try:
        return evaluate_checkpoint(run_dir, weights=weights, device="cpu")["test_acc"]
    finally:
        ev.load_cifar10 = original


def test_eval_matches_final_test_accuracy(tmp_path, data):
    summary = train(cfg_with("train.epochs=2"), tmp_path / "r", data=data, progress=False)
    assert evaluate_checkpoint_on(tmp_path / "r", "last", data) == pytest.approx(summary["test_acc"])


def test_eval_uses_ema_weights_and_tta_like_the_run(tmp_path, data):
    summary = train(cfg_with("train.epochs=2", "train.ema_decay=0.9", "train.tta=flip"), tmp_path / "r",
                    data=data, progress=False)
    assert summary["averaged"] == "ema" and summary["tta"] == "flip"
    assert evaluate_checkpoint_on(tmp_path / "r", "last", data) == pytest.approx(summary["test_acc"])


def test_divergence_is_recorded(tmp_path, data):
    cfg = cfg_with("train.epochs=3", "model.options.norm=none", "optim.lr=1e8", "optim.weight_decay=0",
                   "sched.name=constant", "train.log_every=2")
    summary = train(cfg, tmp_path / "r", data=data, progress=False)
    assert summary["status"] == "diverged"
    assert "loss became" in summary["error"]
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "diverged"


def test_no_validation_split(tmp_path, data):
    summary = train(cfg_with("train.epochs=1", "data.val_size=0"), tmp_path / "r", data=data, progress=False)
    assert summary["val_images"] == 0 and summary["best_epoch"] is None
    assert summary["final_val_acc"] is None  # NaN written as null
    assert summary["test_acc"] > 0.1
