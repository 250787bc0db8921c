"""Noisy BN (Santurkar et al. Algorithm 1): how to evaluate it fairly, and Fig. 2 (activation distributions).

Why ``NoisyBNEvaluation``: in eval mode a BN layer normalises with the running statistics collected during
training. For noisy BN those were collected under the injected noise (each BN sees the noisy output of the
previous one), so eval-mode accuracy measures a train/test mismatch, not what the network learned. Two more
evaluations of the same weights separate the two: (a) batch statistics (BN normalises each evaluation batch with
its own statistics, noise off) and (b) clean running statistics (recomputed without noise by one pass over the
un-augmented training images, then eval mode).

Why ``ActivationRecorder``: Fig. 2 of the paper shows that noisy BN's activations drift (distribution shift)
while its training is as good as BN's. The recorder reads one conv unit's pre-activation inside the training
forward itself (a forward hook: no extra compute, it never writes).
"""

from __future__ import annotations

import contextlib
import copy
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cifarlab.analysis.bn_study.probes import preserved_rng
from cifarlab.engine.callbacks import Callback
from cifarlab.errors import ConfigError
from cifarlab.io import atomic_write_bytes, atomic_write_json
from cifarlab.models.noisy_bn import NoisyBatchNorm, noise_disabled
from cifarlab.models.vgg_a import ConvUnit
from cifarlab.plotting import new_figure, png_bytes

QUANTILES: tuple[int, ...] = (1, 5, 25, 50, 75, 95, 99)  # percent; row keys q1 ... q99
BN_EVAL_NOTE = "running statistics collected during training (under noise for noisy BN)"
NO_BN_NOTE = "no BatchNorm: no statistics are involved; the *_batch_stats / *_clean_stats keys repeat the plain " \
             "evaluation"


# -- evaluation without the noise's train/test mismatch ----------------------------------------------------------


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def batch_stats_copy(model: nn.Module) -> nn.Module:
    """A deep copy whose BNs normalise with the batch statistics even in eval mode (running buffers removed:
    torch then uses the batch and updates nothing), noise off; dropout etc. stay in eval behaviour."""
    clone = copy.deepcopy(model)
    for m in batch_norms(clone):
        m.track_running_stats = False
        m.running_mean, m.running_var = None, None
    for m in clone.modules():
        if isinstance(m, NoisyBatchNorm):
            m.noise_enabled = False
    return clone


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable[Tensor],
                       forward: Callable[[], Any] = contextlib.nullcontext) -> None:
    """Reset every BN's running statistics and recompute them with the noise off in one pass over ``batches``.

    Momentum b / seen makes each running mean the exact mean over all images, whatever the batch sizes
    (``averaging.update_bn``'s momentum None weighs batches equally: exact only for equal-sized batches); the
    running variance is the size-weighted mean of the per-batch (unbiased) variances, as BN itself estimates it.
    Only the BNs are in training mode during the pass (dropout stays off); modes and momenta are restored.
    """
    norms = batch_norms(model)
    if not norms:
        return
    momenta, modes = [m.momentum for m in norms], {m: m.training for m in model.modules()}
    for m in norms:
        m.reset_running_stats()
    model.eval()
    for m in norms:
        m.train()
    seen = 0
    with noise_disabled(model):
        for x in batches:
            seen += len(x)
            for m in norms:
                m.momentum = len(x) / seen
            with forward():
                model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    for m, mode in modes.items():
        m.training = mode


def tested_model(trainer: Any) -> nn.Module:
    """The weights ``test_acc`` was computed with: the SWA average (after its BN pass), the EMA copy, or the
    model itself (``train.test_weights`` best/last is already loaded into it by then)."""
    swa, ema = getattr(trainer, "swa", None), getattr(trainer, "ema", None)
    if swa is not None and getattr(trainer, "swa_final", False):
        return swa.module
    return ema.module if ema is not None else trainer.raw_model


class NoisyBNEvaluation(Callback):
    """At fit end, after the trainer's own test: the tested weights on validation and test with (a) batch
    statistics and (b) clean recomputed running statistics, always on deep copies (the trainer's model, its
    buffers and its noise generators are never touched). Summary keys ``{val,test}_{acc,loss}_batch_stats``,
    ``{val,test}_{acc,loss}_clean_stats``, ``bn_eval_note`` (what ``test_acc`` itself used), ``bn_eval_seconds``.
    Models without BN: one plain evaluation of a copy fills both sets of keys (they coincide by definition).

    ``stats_batch_size``: images per forward of the statistics pass (default: ``train.eval_batch_size``).
    """

    def __init__(self, stats_batch_size: int | None = None) -> None:
        if stats_batch_size is not None and stats_batch_size < 1:
            raise ValueError(f"stats_batch_size must be >= 1, got {stats_batch_size}")
        self.stats_batch_size = stats_batch_size

    @property
    def key(self) -> str:
        return "noisy_bn_eval"

    def on_fit_end(self, trainer: Any, summary: dict[str, Any]) -> None:
        if "test_acc" not in summary or summary.get("status") == "diverged":
            return  # no test evaluation (diverged or nothing trained): nothing to compare with
        start = time.perf_counter()
        model = tested_model(trainer)
        with preserved_rng(trainer.device):
            if not batch_norms(model):
                summary["bn_eval_note"] = NO_BN_NOTE
                results = self._evaluate(trainer, copy.deepcopy(model))
                self._store(summary, results, "batch_stats")
                self._store(summary, results, "clean_stats")
            else:
                summary["bn_eval_note"] = BN_EVAL_NOTE
                self._store(summary, self._evaluate(trainer, batch_stats_copy(model)), "batch_stats")
                clean = copy.deepcopy(model)
                bs = self.stats_batch_size or trainer.cfg.train.eval_batch_size
                x = trainer.train_x
                batches = (trainer.augment.eval(x[i : i + bs]) for i in range(0, len(x), bs))
                recompute_bn_stats(clean, batches, trainer.autocast)
                self._store(summary, self._evaluate(trainer, clean), "clean_stats")
        summary["bn_eval_seconds"] = time.perf_counter() - start

    @staticmethod
    def _evaluate(trainer: Any, model: nn.Module) -> dict[str, Any]:
        splits = (("val", trainer.val_x, trainer.val_y), ("test", trainer.test_x, trainer.test_y))
        return {name: trainer.evaluate(model, x, y) for name, x, y in splits if len(x)}

    @staticmethod
    def _store(summary: dict[str, Any], results: dict[str, Any], tag: str) -> None:
        for split, r in results.items():
            summary[f"{split}_acc_{tag}"], summary[f"{split}_loss_{tag}"] = r.acc, r.loss


# -- Fig. 2: one unit's activation distribution over training ----------------------------------------------------


def conv_units(model: nn.Module) -> list[ConvUnit]:
    return [m for m in model.modules() if isinstance(m, ConvUnit)]


class _Tap:
    """The forward hook: a weak reference to its recorder (no cycle, no trainer in deep copies of the model);
    a deep copy of the model gets a dead tap, so evaluation copies never record."""

    def __init__(self, recorder: ActivationRecorder | None) -> None:
        self.ref = weakref.ref(recorder) if recorder is not None else None

    def __call__(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        recorder = self.ref() if self.ref is not None else None
        if recorder is not None:
            recorder.capture(module, output)

    def __deepcopy__(self, memo: dict[int, Any]) -> _Tap:
        return _Tap(None)


class ActivationRecorder(Callback):
    """Every ``every`` steps, the distribution of conv unit ``unit``'s (1-based; VGG-A has 8) pre-activation
    (conv -> BN (-> noise), or the conv output without BN) in the training forward of that step: quantiles,
    mean, std and a ``bins``-bin histogram of a fixed random subsample (``sample`` values, seeded by ``seed``).
    Rows in the checkpoint state; ``activations.json`` at fit end."""

    file = "activations.json"

    def __init__(self, unit: int, every: int, bins: int = 40, sample: int = 20_000, seed: int = 0) -> None:
        if unit < 1 or every < 1 or bins < 1 or sample < 1:
            raise ValueError(f"ActivationRecorder needs unit, every, bins, sample >= 1; got {unit}, {every}, "
                             f"{bins}, {sample}")
        self.unit, self.every, self.bins, self.sample, self.seed = unit, every, bins, sample, seed
        self.rows: list[dict[str, Any]] = []
        self._indices: dict[int, Tensor] = {}  # numel -> the fixed subsample positions
        self._trainer: Any = None
        self._module: nn.Module | None = None
        self._handle: Any = None
        self._seen = -1  # trainer.step whose training forward was already seen

    @property
    def key(self) -> str:
        return "activations"

    def on_fit_start(self, trainer: Any) -> None:
        units = conv_units(trainer.raw_model)
        if not 1 <= self.unit <= len(units):
            raise ConfigError(f"ActivationRecorder: unit {self.unit} is not in 1..{len(units)} (the model's conv "
                              f"units)")
        self._trainer, self._module, self._seen = trainer, units[self.unit - 1].norm, -1
        self._handle = self._module.register_forward_hook(_Tap(self))

    def capture(self, module: nn.Module, output: Tensor) -> None:
        """Record the first training-mode forward of a due step (the trainer's; probes' forwards come later in
        the step or, for on_step_end probes, before the step counter moves on)."""
        t = self._trainer
        if t is None or module is not self._module or not module.training:
            return
        step = t.step
        if step == self._seen or step >= t.total_steps:
            return
        self._seen = step
        if step % self.every == 0:
            self.rows.append({"step": step, "epoch": t.epoch, **self.describe(output)})

    def subsample(self, values: Tensor) -> Tensor:
        """The fixed random subset (same positions at every step for one tensor size); all values if fewer."""
        flat = values.detach().reshape(-1)
        if flat.numel() <= self.sample:
            return flat
        if flat.numel() not in self._indices:
            gen = torch.Generator().manual_seed(self.seed)  # private generator: the global RNG is not touched
            self._indices[flat.numel()] = torch.randperm(flat.numel(), generator=gen)[: self.sample].to(flat.device)
        return flat[self._indices[flat.numel()]]

    def describe(self, values: Tensor) -> dict[str, Any]:
        v = self.subsample(values).double().cpu().numpy()
        row: dict[str, Any] = {f"q{q}": float(x) for q, x in zip(QUANTILES, np.quantile(v, [q / 100 for q in
                                                                                              QUANTILES]))}
        counts, edges = np.histogram(v, bins=self.bins)
        row.update(n=int(v.size), mean=float(v.mean()), std=float(v.std()), hist=counts.tolist(),
                   hist_lo=float(edges[0]), hist_hi=float(edges[-1]))
        return row

    def on_fit_end(self, trainer: Any, summary: dict[str, Any]) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle, self._trainer, self._module = None, None, None
        atomic_write_json(trainer.run_dir / self.file, {"unit": self.unit, "every": self.every, "bins": self.bins,
                                                        "sample": self.sample, "quantiles": list(QUANTILES),
                                                        "rows": self.rows})

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])


# -- the figure --------------------------------------------------------------------------------------------------


def activation_figure(runs_rows: dict[str, list[dict[str, Any]]], title: str) -> Any:
    """One panel per model (label -> recorder rows): 5-95 % and 25-75 % bands and the median over steps."""
    if not runs_rows:
        raise ValueError("plot_activation_distributions needs at least one run")
    n = len(runs_rows)
    fig = new_figure(3.6 * n + 0.6, 3.6)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    for i, (ax, (label, rows)) in enumerate(zip(axes, runs_rows.items())):
        _draw_panel(ax, rows)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("training step")
        if i == 0:
            ax.set_ylabel("activation (input of ReLU)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=7, framealpha=0.8)
    fig.suptitle(title, fontsize=11)
    return fig


def _draw_panel(ax: Any, rows: list[dict[str, Any]]) -> None:
    steps = [r["step"] for r in rows]
    col = {k: [r[k] for r in rows] for k in ("q5", "q25", "q50", "q75", "q95")} if rows else {}
    if rows:
        ax.fill_between(steps, col["q5"], col["q95"], color="#4c72b0", alpha=0.2, lw=0, label="5-95 %")
        ax.fill_between(steps, col["q25"], col["q75"], color="#4c72b0", alpha=0.45, lw=0, label="25-75 %")
    ax.plot(steps, col.get("q50", []), color="#1f3b73", lw=1.5, label="median")


def plot_activation_distributions(runs_rows: dict[str, list[dict[str, Any]]], path: str | Path,
                                  title: str) -> Path:
    """Fig. 2 as a PNG at ``path`` (written atomically); returns the path."""
    fig = activation_figure(runs_rows, title)
    atomic_write_bytes(path, png_bytes(fig, tight=False))
    return Path(path)


__all__ = ["BN_EVAL_NOTE", "NO_BN_NOTE", "QUANTILES", "ActivationRecorder", "NoisyBNEvaluation",
           "activation_figure", "batch_norms", "batch_stats_copy", "conv_units", "plot_activation_distributions",
           "recompute_bn_stats", "tested_model"]
