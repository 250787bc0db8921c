"""Noisy BN: the noise switch, the fair evaluations (batch / clean statistics) and Fig. 2's activation recorder,
each checked against an independent computation on a tiny VGG-A trained a few steps on synthetic data."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from cifarlab.analysis.bn_study.noisy import (
    BN_EVAL_NOTE,
    NO_BN_NOTE,
    QUANTILES,
    ActivationRecorder,
    NoisyBNEvaluation,
    activation_figure,
    conv_units,
    plot_activation_distributions,
    recompute_bn_stats,
)
from cifarlab.analysis.bn_study.settings import load_settings
from cifarlab.analysis.bn_study.study import RunSpec, run_config
from cifarlab.data.synthetic import synthetic_cifar
from cifarlab.engine.callbacks import Callback, EpochEndFunction
from cifarlab.engine.trainer import train
from cifarlab.models import create
from cifarlab.models.noisy_bn import NoisyBatchNorm, noise_disabled

TINY = ["data.synthetic=200", "width_mult=0.0625", "batch_size=32", "eval_batch_size=100"]
NOISE = (0.5, 1.25, 0.1, 0.1)


def _cfg(model: str, steps: int = 6, augment: bool = False):
    s = load_settings("quick", overrides=TINY)
    return run_config(RunSpec(model, "sgd", 0.1, steps, augment=augment, noise=NOISE if "noisy" in model else ()),
                      s)


def _data():
    return synthetic_cifar(200, seed=0)


def _state(model: nn.Module) -> dict[str, Any]:
    return {k: (v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)) for k, v in
            model.state_dict().items()}


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        if isinstance(a[k], torch.Tensor):
            if not torch.equal(a[k], b[k]):
                return False
        else:  # noisy BN's extra state: {device: generator state}
            if a[k].keys() != b[k].keys() or any(not torch.equal(a[k][d], b[k][d]) for d in a[k]):
                return False
    return True


class Grab(Callback):
    """Keeps the trainer and a snapshot of its model's state at fit end (placed before / after the callback)."""

    def __init__(self, name: str) -> None:
        self.name, self.trainer, self.state = name, None, None

    @property
    def key(self) -> str:
        return self.name

    def on_fit_end(self, trainer: Any, summary: dict[str, Any]) -> None:
        self.trainer, self.state = trainer, _state(trainer.raw_model)


# -- the noise switch ----------------------------------------------------------------------------------------------


def test_noise_disabled_is_plain_bn_in_training_mode_and_restores() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(NoisyBatchNorm(nn.BatchNorm2d(3), seed=1), NoisyBatchNorm(nn.BatchNorm2d(3), seed=2))
    model[1].noise_enabled = False  # a module already off stays off afterwards
    x = torch.randn(4, 3, 5, 5)
    gen_before = [m._generator(x.device).get_state().clone() for m in model]
    with noise_disabled(model):
        assert not any(m.noise_enabled for m in model)
        out = model(x)
    assert [m.noise_enabled for m in model] == [True, False]
    assert all(torch.equal(g, m._generator(x.device).get_state()) for g, m in zip(gen_before, model))
    ref = nn.Sequential(nn.BatchNorm2d(3), nn.BatchNorm2d(3)).train()
    assert torch.allclose(out, ref(x), atol=1e-6)  # exactly BN: fresh affine, batch statistics
    with pytest.raises(RuntimeError), noise_disabled(model):
        raise RuntimeError
    assert [m.noise_enabled for m in model] == [True, False]
    assert not torch.allclose(model(x), ref(x), atol=1e-3)  # noise back on for the first layer


# -- the evaluations -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    before, after = Grab("before"), Grab("after")
    summary = train(_cfg("vgg_a_noisy_bn"), tmp_path_factory.mktemp("noisy"), data=_data(), progress=False,
                    callbacks=[before, NoisyBNEvaluation(), after])
    return {"summary": summary, "before": before, "after": after}


def test_evaluation_keys_and_trainer_model_untouched(noisy_run: dict[str, Any]) -> None:
    summary, before, after = noisy_run["summary"], noisy_run["before"], noisy_run["after"]
    for split, kind, tag in itertools.product(("val", "test"), ("acc", "loss"), ("batch_stats", "clean_stats")):
        assert np.isfinite(summary[f"{split}_{kind}_{tag}"]), (split, kind, tag)
    assert summary["bn_eval_note"] == BN_EVAL_NOTE
    # Weights, BN buffers (running stats, num_batches_tracked) and noise generator states as before the callback.
    assert _same_state(before.state, after.state)
    assert any(isinstance(m, NoisyBatchNorm) and m.noise_enabled for m in after.trainer.raw_model.modules())
    assert json.loads((Path(after.trainer.run_dir) / "summary.json").read_text())["test_acc_clean_stats"] == \
        summary["test_acc_clean_stats"]


def test_clean_running_mean_is_the_mean_over_training_images(noisy_run: dict[str, Any]) -> None:
    trainer, summary = noisy_run["after"].trainer, noisy_run["summary"]
    model = trainer.raw_model
    images = trainer.augment.eval(trainer.train_x)
    with torch.no_grad():  # independent: the first conv's output (the first BN's input), averaged by hand
        conv_out = conv_units(model)[0].conv(images).double()
    expected_mean = conv_out.mean(dim=(0, 2, 3))
    clean = copy.deepcopy(model)
    bs = trainer.cfg.train.eval_batch_size
    assert len(images) % bs != 0  # unequal batches: an equal-weight average of batch means would be off
    recompute_bn_stats(clean, (images[i : i + bs] for i in range(0, len(images), bs)))
    first = conv_units(clean)[0].norm.bn
    torch.testing.assert_close(first.running_mean.double(), expected_mean, rtol=1e-4, atol=1e-6)
    chunks = [conv_out[i : i + bs] for i in range(0, len(images), bs)]
    var = sum(len(c) * c.var(dim=(0, 2, 3), unbiased=True) for c in chunks) / len(images)
    torch.testing.assert_close(first.running_var.double(), var, rtol=1e-4, atol=1e-6)
    assert clean.training == model.training and first.momentum == conv_units(model)[0].norm.bn.momentum
    # The summary's clean-statistics accuracy is the eval-mode accuracy of exactly this recomputed model.
    assert trainer.evaluate(clean, trainer.test_x, trainer.test_y).acc == summary["test_acc_clean_stats"]


def test_batch_stats_accuracy_matches_an_independent_computation(noisy_run: dict[str, Any]) -> None:
    trainer, summary = noisy_run["after"].trainer, noisy_run["summary"]
    bs = trainer.cfg.train.eval_batch_size
    for split, x, y in (("val", trainer.val_x, trainer.val_y), ("test", trainer.test_x, trainer.test_y)):
        model = copy.deepcopy(trainer.raw_model).train()
        correct = 0
        with torch.no_grad(), noise_disabled(model):
            for i in range(0, len(x), bs):
                pred = model(trainer.augment.eval(x[i : i + bs])).argmax(1)
                correct += int((pred == y[i : i + bs]).sum())
        assert summary[f"{split}_acc_batch_stats"] == correct / len(x), split


def test_model_without_bn_repeats_the_plain_evaluation(tmp_path: Path) -> None:
    summary = train(_cfg("vgg_a", steps=3), tmp_path, data=_data(), progress=False, callbacks=[NoisyBNEvaluation()])
    assert summary["bn_eval_note"] == NO_BN_NOTE
    for tag in ("batch_stats", "clean_stats"):
        assert summary[f"test_acc_{tag}"] == summary["test_acc"] and summary[f"test_loss_{tag}"] == \
            summary["test_loss"]
        assert summary[f"val_acc_{tag}"] == summary["final_val_acc"]


# -- Fig. 2: the activation recorder -------------------------------------------------------------------------------


class Capture(Callback):
    """Independent capture: at each due step, unit ``unit``'s norm output of a COPY of the model (pre-step weights,
    training mode, the step's batch); plain BN only (noisy BN's copy would draw other noise)."""

    def __init__(self, unit: int, every: int) -> None:
        self.unit, self.every, self.tensors = unit, every, {}

    def on_after_backward(self, trainer: Any, ctx: Any) -> None:
        if ctx.step % self.every:
            return
        model, out = copy.deepcopy(trainer.raw_model).train(), []
        conv_units(model)[self.unit - 1].norm.register_forward_hook(lambda m, i, o: out.append(o.detach()))
        with torch.no_grad():
            model(ctx.x)
        self.tensors[ctx.step] = out[0]


def test_recorded_quantiles_equal_numpy_on_the_captured_tensor(tmp_path: Path) -> None:
    capture = Capture(unit=2, every=2)
    train(_cfg("vgg_a_bn", steps=6), tmp_path / "a", data=_data(), progress=False,
          callbacks=[ActivationRecorder(unit=2, every=2, sample=10**7), capture])
    rows = json.loads((tmp_path / "a" / "activations.json").read_text())["rows"]
    assert [r["step"] for r in rows] == [0, 2, 4] == sorted(capture.tensors)
    for row in rows:
        v = capture.tensors[row["step"]].double().numpy().ravel()
        assert row["n"] == v.size
        for q, value in zip(QUANTILES, np.quantile(v, [q / 100 for q in QUANTILES])):
            assert row[f"q{q}"] == value, q
        assert row["mean"] == pytest.approx(v.mean(), rel=1e-9, abs=1e-12)
        assert row["std"] == pytest.approx(v.std(), rel=1e-9)
        assert sum(row["hist"]) == v.size and row["hist_lo"] == v.min() and row["hist_hi"] == v.max()
    # A bounded subsample: the same fixed positions every time, ``sample`` values.
    small = ActivationRecorder(unit=1, every=1, sample=1000, seed=3)
    t = torch.randn(8, 4, 16, 16)
    assert torch.equal(small.subsample(t), small.subsample(t.clone())) and small.subsample(t).numel() == 1000
    assert not torch.equal(small.subsample(t), ActivationRecorder(1, 1, sample=1000, seed=4).subsample(t))


def test_recorder_does_not_perturb_and_resumes(tmp_path: Path) -> None:
    cfg = _cfg("vgg_a_noisy_bn", steps=15, augment=True)
    train(cfg, tmp_path / "plain", data=_data(), progress=False)
    train(cfg, tmp_path / "whole", data=_data(), progress=False,
          callbacks=[ActivationRecorder(3, every=2), NoisyBNEvaluation()])

    def stop(epoch: int, row: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", data=_data(), progress=False,
              callbacks=[ActivationRecorder(3, every=2), EpochEndFunction(stop)])
    train(cfg, tmp_path / "cut", resume=True, data=_data(), progress=False, callbacks=[ActivationRecorder(3, every=2)])
    steps = {d: (tmp_path / d / "steps.csv").read_text() for d in ("plain", "whole", "cut")}
    assert steps["plain"] == steps["whole"] == steps["cut"]
    weights = {d: torch.load(tmp_path / d / "checkpoints" / "last.pt", weights_only=True)["model"]
               for d in ("plain", "whole")}
    assert _same_state(weights["plain"], weights["whole"])
    rows = {d: json.loads((tmp_path / d / "activations.json").read_text())["rows"] for d in ("whole", "cut")}
    assert rows["whole"] == rows["cut"] and [r["step"] for r in rows["whole"]] == list(range(0, 15, 2))
    assert all(r["n"] == 20_000 for r in rows["whole"])


def test_recorder_rejects_a_unit_the_model_does_not_have(tmp_path: Path) -> None:
    from cifarlab.errors import ConfigError

    with pytest.raises(ConfigError, match="unit 9"):
        train(_cfg("vgg_a", steps=1), tmp_path, data=_data(), progress=False, callbacks=[ActivationRecorder(9, 1)])
    assert len(conv_units(create("vgg_a", width_mult=0.0625))) == 8


# -- the figure ----------------------------------------------------------------------------------------------------


def _fake_rows(shift: float) -> list[dict[str, Any]]:
    return [{"step": s, **{f"q{q}": shift + (q - 50) / 25 * (1 + s / 10) for q in QUANTILES}} for s in range(0, 50, 5)]


def _drawn_ticklabels(ax: Any) -> list[Any]:
    """Tick labels matplotlib draws: visible ones inside the view limits (the others keep stale positions)."""
    (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
    xs = [t for t in ax.get_xticklabels() if x0 <= t.get_position()[0] <= x1]
    ys = [t for t in ax.get_yticklabels() if y0 <= t.get_position()[1] <= y1]
    return [t for t in xs + ys if t.get_visible() and t.get_text()]


def test_activation_plot_is_a_png_without_overlapping_text(tmp_path: Path) -> None:
    runs = {"standard": _fake_rows(0.0), "BN": _fake_rows(0.5), "noisy BN": _fake_rows(1.0)}
    path = plot_activation_distributions(runs, tmp_path / "fig" / "activations.png", "Fig. 2: conv unit 3")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = activation_figure(runs, "Fig. 2: conv unit 3")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [fig._suptitle]
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
        texts += _drawn_ticklabels(ax)
    boxes = [t.get_window_extent(renderer) for t in texts if t.get_text()]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)
    assert len({ax.get_ylim() for ax in fig.axes}) == 1  # shared y-axis
    assert [ax.get_title() for ax in fig.axes] == list(runs)
