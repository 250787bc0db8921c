"""Training strategies inside the trainer, on the synthetic data of test_engine: gradient accumulation equals a
big batch, resume stays exact with EMA + Lookahead + plateau + mixup, SWA averages the epoch-end weights, the
validation numbers come from the EMA weights, option combinations learn, lr.png is written, divergence exits 3.
Tiny model, a few hundred images, a few epochs per run."""

from __future__ import annotations

import csv

import pytest
import torch

from cifarlab import cli
from cifarlab.data import make_splits
from cifarlab.engine import build as build_module
from cifarlab.engine.build import build_augment, build_model
from cifarlab.engine.callbacks import EpochEndFunction
from cifarlab.engine.checkpoint import load_checkpoint
from cifarlab.engine.evaluate import evaluate
from cifarlab.engine.trainer import train
from synthetic import TINY, cfg_with, synthetic_cifar, train_interrupted_then_resumed


@pytest.fixture(scope="module")
def data():
    return synthetic_cifar()  # 500 train / 100 val / 200 test images


def read_rows(path):
    with path.open() as f:
        return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in csv.DictReader(f)]


def test_grad_accumulation_equals_one_big_batch(tmp_path, data):
    # No BN, no dropout, no random augmentation: the only difference is 2 micro-batches of 50 vs one of 100.
    common = ["train.epochs=1", "model.options.norm=none", "augment.crop_padding=0", "augment.flip=false",
              "optim.weight_decay=5e-4", "optim.l2=1e-3"]
    big = train(cfg_with(*common, "train.batch_size=100"), tmp_path / "big", data=data, progress=False)
    acc = train(cfg_with(*common, "train.batch_size=50", "train.grad_accum_steps=2"), tmp_path / "acc",
                data=data, progress=False)
    assert big["steps"] == acc["steps"] == 5  # 500 images / (50 x 2)
    wb = load_checkpoint(tmp_path / "big" / "checkpoints" / "last.pt")["model"]
    wa = load_checkpoint(tmp_path / "acc" / "checkpoints" / "last.pt")["model"]
    worst = max(float((wb[k] - wa[k]).abs().max()) for k in wb)
    assert worst < 1e-6, worst
    loss_big = [float(r["loss"]) for r in read_rows(tmp_path / "big" / "steps.csv")]
    loss_acc = [float(r["loss"]) for r in read_rows(tmp_path / "acc" / "steps.csv")]
    assert loss_acc == pytest.approx(loss_big, rel=1e-5)  # logged loss: mean over the effective batch


def test_resume_with_ema_lookahead_plateau_mixup_equals_uninterrupted(tmp_path, data):
    # plateau_threshold 0.9: an "improvement" needs a 90 % drop, so every epoch after the first cuts the LR of
    # the next one: a resume that forgot the plateau state would train epoch 3 with another LR.
    cfg = cfg_with("train.epochs=3", "train.ema_decay=0.8", "optim.lookahead_k=3", "sched.name=plateau",
                   "sched.plateau_patience=0", "sched.plateau_threshold=0.9", "sched.plateau_factor=0.5",
                   "augment.mixup_alpha=0.4", "augment.cutmix_alpha=1.0", "optim.no_decay_bn_bias=true",
                   "optim.l2=1e-4", "train.tta=flip")
    full = train(cfg, tmp_path / "full", data=data, progress=False)

    resumed = train_interrupted_then_resumed(cfg, tmp_path / "part", data)
    for key in ("test_loss", "test_acc", "final_train_loss", "final_val_loss", "best_epoch", "steps"):
        assert resumed[key] == full[key], key
    sf = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    sr = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    for part in ("model", "averaged"):
        assert all(torch.equal(sf[part][k], sr[part][k]) for k in sf[part]), part
    assert sf["schedule"] == sr["schedule"] and sf["optimizer"]["lookahead_steps"] == 30
    steps = read_rows(tmp_path / "full" / "steps.csv")
    assert read_rows(tmp_path / "part" / "steps.csv") == steps
    assert read_rows(tmp_path / "part" / "epochs.csv") == read_rows(tmp_path / "full" / "epochs.csv")
    # epoch 1 sets the best loss, epoch 2 misses the 90 % drop: the LR of epoch 3 is halved (restored on resume)
    assert [float(steps[i]["lr"]) for i in (0, 10, 20)] == [0.05, 0.05, 0.025]
    assert full["averaged"] == "ema" and full["tta"] == "flip"


def test_validation_uses_ema_weights(tmp_path, data):
    cfg = cfg_with("train.epochs=2", "train.ema_decay=0.9")
    train(cfg, tmp_path / "r", data=data, progress=False)
    state = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    splits = make_splits(data, val_size=100, seed=0)
    model = build_model(cfg, torch.device("cpu"))
    rows = read_rows(tmp_path / "r" / "epochs.csv")
    results = {}
    for part in ("averaged", "model"):
        model.load_state_dict(state[part])
        results[part] = evaluate(model, splits.val_x, splits.val_y, build_augment(cfg), torch.nn.CrossEntropyLoss(),
                                 100)
    assert results["averaged"].loss == pytest.approx(float(rows[-1]["val_loss"]), rel=1e-5)
    assert results["model"].loss != pytest.approx(results["averaged"].loss, rel=1e-3)


def test_swa_averages_epoch_end_weights_at_swa_lr(tmp_path, data):
    cfg = cfg_with("train.epochs=4", "train.swa_start_epoch=3", "train.swa_lr=0.01")
    snapshots = []

    def grab(epoch, row):
        snapshots.append(load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["model"])

    summary = train(cfg, tmp_path / "r", data=data, progress=False, callbacks=[EpochEndFunction(grab)])
    assert summary["swa_epochs_averaged"] == 2 and summary["averaged"] == "swa"
    assert summary["swa_val_acc"] > 0.5 and summary["test_acc"] > 0.5
    state = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    swa = state["swa"]["module"]
    for name, value in swa.items():
        if name.endswith(("weight", "bias")) and "running" not in name:
            torch.testing.assert_close(value, (snapshots[2][name] + snapshots[3][name]) / 2, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(state["averaged"][k], swa[k]) for k in swa)  # BN-updated average kept for eval
    lrs = [float(r["lr"]) for r in read_rows(tmp_path / "r" / "steps.csv")]
    assert lrs[20:] == [0.01] * 20 and lrs[19] != 0.01  # swa_lr from epoch 3 on


@pytest.mark.parametrize(
    "overrides",
    [
        ["loss.name=focal", "optim.name=adamw", "optim.lr=0.01", "sched.name=warmup_cosine",
         "sched.warmup_epochs=1", "augment.cutmix_alpha=1", "train.ema_decay=0.9", "train.tta=flip"],
        ["loss.name=label_smoothing", "loss.label_smoothing=0.1", "optim.name=scratch_sgd", "optim.nesterov=true",
         "sched.name=multistep", "sched.milestones=[3]", "augment.mixup_alpha=0.2", "optim.no_decay_bn_bias=true",
         "optim.bn_bias_lr_mult=2", "train.grad_accum_steps=2", "train.batch_size=25"],
        ["optim.name=signum", "optim.lr=0.002", "sched.name=cosine_restarts", "sched.t_0=2",
         "optim.lookahead_k=5", "optim.l1=1e-5", "optim.weight_decay=0", "train.tta=flip_shift"],
        ["loss.name=bce", "optim.name=rmsprop", "optim.lr=0.003", "sched.name=plateau", "sched.plateau_patience=1",
         "optim.grad_clip=5"],
        ["loss.name=mse", "optim.name=adam", "optim.lr=0.005", "optim.l2=1e-4", "optim.weight_decay=0",
         "sched.name=warmup_linear", "sched.warmup_epochs=1"],
    ],
    ids=["focal-adamw-cutmix-ema-tta", "ls-scratchsgd-mixup-accum", "signum-sgdr-lookahead-l1", "bce-rmsprop-plateau",
         "mse-adam-l2"],
)
def test_strategy_combinations_learn(tmp_path, data, overrides):
    summary = train(cfg_with("train.epochs=4", *overrides), tmp_path / "r", data=data, progress=False)
    assert summary["status"] == "completed"
    assert summary["test_acc"] > 0.5, summary["test_acc"]  # chance is 0.1
    assert (tmp_path / "r" / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_divergence_exits_3_from_the_cli(tmp_path, data, monkeypatch, capsys):
    monkeypatch.setattr(build_module, "load_cifar10", lambda *a, **k: data)
    code = cli.main(["train", *TINY, "train.epochs=2", "model.options.norm=none", "optim.lr=1e8",
                     "optim.weight_decay=0", "sched.name=constant", "train.log_every=2", "train.device=cpu",
                     "--out", str(tmp_path), "--name", "boom", "--quiet"])
    assert code == 3
    assert "run diverged" in capsys.readouterr().err
    assert (tmp_path / "boom" / "lr.png").is_file()
