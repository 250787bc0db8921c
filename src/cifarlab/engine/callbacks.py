"""The engine's instrumentation seam: callbacks that plug into the training loop without copying it.

A ``Callback`` overrides any of the hooks below; the trainer calls them in list order. Hooks receive the
trainer (read its public attributes: ``cfg``, ``model``, ``optimizer``, ``step``, ``epoch``, ``run_dir``,
``device``) and, inside the step, a ``StepContext``. A callback that keeps state across epochs returns it from
``state_dict()``: the trainer stores it in the run's checkpoint and hands it back through ``load_state_dict()``
on ``--resume``, so an interrupted run resumes with the callback exactly where an uninterrupted one would be
(the checkpoint is written at epoch ends: what a callback records inside an interrupted epoch is recomputed).

A callback that measures must not perturb: leave the weights, ``.grad``, BN buffers, optimizer state and the
RNG streams as they were (``analysis/bn_study/probes.py`` shows how: ``functional_call`` on copies).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cifarlab.engine.metrics import ProgressLog, epoch_line

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cifarlab.config import EarlyStoppingConfig


class TrainerView(Protocol):
    """What a callback may read (and, for ``status``, set) of the trainer running it."""

    cfg: Any  # the RunConfig
    device: torch.device
    run_dir: Path
    model: nn.Module  # possibly wrapped by torch.compile; ``raw_model`` is the module itself
    raw_model: nn.Module
    optimizer: torch.optim.Optimizer
    step: int  # optimizer steps completed
    epoch: int  # epochs completed
    epochs: int  # epochs planned
    status: str  # set to "early_stopped" to stop after this epoch


@dataclass
class StepContext:
    """One optimizer step as a hook sees it (with gradient accumulation: the last micro-batch)."""

    step: int  # index of this optimizer step (0-based; the trainer's ``step`` counts completed steps)
    epoch: int  # 0-based epoch
    batch_index: int  # step within the epoch
    indices: torch.Tensor  # positions of the batch's images in the trainer's ``train_x``
    x: torch.Tensor  # the model input (augmented, normalised)
    y: torch.Tensor  # int64 labels
    target: torch.Tensor  # what the loss saw: ``y`` or soft targets (mixup/cutmix)
    logits: torch.Tensor
    loss: torch.Tensor  # the data loss of the batch (detached after backward)


class Callback:
    """Base class: every hook does nothing. ``key`` names the callback's entry in a checkpoint."""

    @property
    def key(self) -> str:
        return type(self).__name__

    def on_fit_start(self, trainer: TrainerView) -> None: ...

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None: ...

    def on_after_backward(self, trainer: TrainerView, ctx: StepContext) -> None:
        """Gradients of this step are in ``.grad``; the optimizer has not stepped yet."""

    def on_step_end(self, trainer: TrainerView, ctx: StepContext) -> None:
        """The optimizer stepped: the model holds the new weights."""

    def on_epoch_end(self, trainer: TrainerView, epoch: int, row: dict[str, Any]) -> None:
        """``row`` is the epoch's metrics line (epochs.csv); called before the epoch's checkpoint is written."""

    def on_checkpoint(self, trainer: TrainerView, epoch: int, row: dict[str, Any]) -> None:
        """The epoch's ``last`` checkpoint is on disk (a run interrupted from here on resumes after this epoch)."""

    def on_fit_end(self, trainer: TrainerView, summary: dict[str, Any]) -> None:
        """``summary`` is about to be written to summary.json; a callback may add keys to it."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class CallbackList:
    """Calls a hook on every callback in order; gathers and restores their states by key."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks: list[Callback] = list(callbacks)
        keys = [cb.key for cb in self.callbacks]
        if len(set(keys)) != len(keys):
            raise ValueError(f"callback keys must be unique, got {keys}")

    def __iter__(self) -> Iterator[Callback]:
        return iter(self.callbacks)

    def call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {cb.key: cb.state_dict() for cb in self.callbacks}

    def load_state_dict(self, states: dict[str, dict[str, Any]]) -> None:
        for cb in self.callbacks:
            if cb.key in states:
                cb.load_state_dict(states[cb.key])


class EpochEndFunction(Callback):
    """Calls ``fn(epochs_completed, row)`` once each epoch is checkpointed (sweeps report progress with it)."""

    def __init__(self, fn: Callable[[int, dict[str, Any]], None]) -> None:
        self.fn = fn

    def on_checkpoint(self, trainer: TrainerView, epoch: int, row: dict[str, Any]) -> None:
        self.fn(epoch + 1, row)


class EpochLines(Callback):
    """Prints each epoch's line once it is checkpointed, with an ETA: the mean wall time of this process's
    epochs (training, validation, checkpoint) times the epochs left; the test evaluation comes after it."""

    def __init__(self, log: ProgressLog) -> None:
        self.log = log
        self.since = time.perf_counter()
        self.seconds, self.count = 0.0, 0

    def on_fit_start(self, trainer: TrainerView) -> None:
        self.since = time.perf_counter()

    def on_checkpoint(self, trainer: TrainerView, epoch: int, row: dict[str, Any]) -> None:
        now = time.perf_counter()
        self.seconds, self.count, self.since = self.seconds + now - self.since, self.count + 1, now
        left = trainer.epochs - trainer.epoch
        eta = self.seconds / self.count * left if left > 0 and trainer.status == "running" else None
        self.log.line(epoch_line(row, trainer.epochs, eta))


class ModelEpochHook(Callback):
    """Calls ``on_epoch_start(epoch)`` on a model that offers it (``models.protocol.EpochAware``: fast_net
    freezes its whitening bias after a few epochs)."""

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        hook = getattr(trainer.raw_model, "on_epoch_start", None)
        if hook is not None:
            hook(epoch)


class EarlyStopping(Callback):
    """Stops the run after ``patience`` validated epochs without improvement (the trainer decides what
    "improved" means from ``train.early_stopping``; it marks each validated row with ``improved``)."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.bad_epochs = 0

    def on_epoch_end(self, trainer: TrainerView, epoch: int, row: dict[str, Any]) -> None:
        if "improved" not in row:
            return
        self.bad_epochs = 0 if row["improved"] else self.bad_epochs + 1
        if self.bad_epochs >= self.patience:
            trainer.status = "early_stopped"

    def state_dict(self) -> dict[str, Any]:
        return {"bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bad_epochs = int(state["bad_epochs"])


def improved(row: dict[str, Any], best: dict[str, Any] | None, es: EarlyStoppingConfig) -> bool:
    """Whether a validated epoch beats the best so far by ``es.min_delta`` on ``es.monitor``."""
    if best is None:
        return True
    if es.monitor == "val_loss":
        return row["val_loss"] < best["val_loss"] - es.min_delta
    return row["val_acc"] > best["val_acc"] + es.min_delta


def default_callbacks(early_stopping_patience: int, log: ProgressLog | None = None) -> Sequence[Callback]:
    """What every run has: the model's own epoch hook, its epoch lines, and early stopping when configured."""
    cbs: list[Callback] = [ModelEpochHook(), EpochLines(log or ProgressLog(enabled=False))]
    if early_stopping_patience > 0:
        cbs.append(EarlyStopping(early_stopping_patience))
    return cbs


__all__ = ["Callback", "CallbackList", "EarlyStopping", "EpochEndFunction", "EpochLines", "ModelEpochHook",
           "StepContext", "default_callbacks"]
