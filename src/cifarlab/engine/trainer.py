"""The training engine: one run, from a ``RunConfig`` to a run directory with metrics, checkpoints and summary.

The story of a run:
  1. resolve the device, seed everything, create (or reopen, on --resume) the run directory;
  2. load CIFAR-10 once as uint8 tensors and carve train/val/test splits; move them to the device;
  3. build model (channels_last), loss, optimizer and LR schedule from the config;
  4. each epoch: shuffle + augment (+ mixup/cutmix) on the device in batches, train (gradient accumulation,
     L1/L2 penalties, EMA/Lookahead updates), evaluate on the validation split (EMA weights and TTA when
     configured), step reduce-on-plateau, add the weights to the SWA average, write metrics and the ``last``
     checkpoint (and ``best`` when validation improved), maybe stop early;
  5. evaluate the chosen weights (``train.test_weights``; the SWA average after a BatchNorm pass when SWA is on)
     on the test set exactly once; write summary.json and lr.png.

Reproducibility: every epoch reseeds the global RNG and a per-epoch data generator from (seed, epoch), so the
result of epoch e does not depend on whether the process was restarted before it. This is what makes
``--resume`` give the same numbers as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cifarlab.config import RunConfig, config_from_dict, to_dict
from cifarlab.data import (
    CLASSES,
    BatchAugment,
    CifarArrays,
    Splits,
    alternate_flip_mask,
    load_cifar10,
    make_splits,
)
from cifarlab.engine.averaging import EMA, SWA, update_bn
from cifarlab.engine.checkpoint import (
    atomic_write_json,
    atomic_write_yaml,
    load_checkpoint,
    save_checkpoint,
)
from cifarlab.engine.environment import environment_info, resolve_device
from cifarlab.engine.losses import build_loss
from cifarlab.engine.metrics import MetricsWriter
from cifarlab.engine.mixing import BatchMixer
from cifarlab.engine.optim import build_optimizer, build_regularizer
from cifarlab.engine.schedules import LRSchedule, plot_lr
from cifarlab.engine.tta import tta_probs
from cifarlab.errors import CheckpointError, ConfigError
from cifarlab.models import create
from cifarlab.models.summary import count_macs, count_params

HALF_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@dataclass
class EvalResult:
    loss: float
    acc: float
    per_class_acc: list[float]
    confusion: list[list[int]]  # confusion[true][pred]


# ----------------------------------------------------------------------------------------------------------------
# Building blocks shared with `cifarlab eval`


def build_model(cfg: RunConfig, device: torch.device) -> nn.Module:
    model = create(cfg.model.name, **cfg.model.options)
    # channels_last lets cuDNN/oneDNN pick NHWC kernels (faster convs on GPUs with tensor cores and on CPU).
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    return model.to(device=device, memory_format=memory_format)


def build_augment(cfg: RunConfig) -> BatchAugment:
    extra = {}
    if cfg.data.normalize == "half":
        extra = {"mean": HALF_NORM[0], "std": HALF_NORM[1]}
    a = cfg.augment
    return BatchAugment(
        crop_padding=a.crop_padding, pad_mode=a.pad_mode, flip=a.flip, cutout=a.cutout,
        channels_last=cfg.train.channels_last, **extra,
    )


def autocast_context(cfg: RunConfig, device: torch.device) -> Callable[[], Any]:
    """Mixed precision on CUDA only: on this kind of CPU bf16 autocast is slower than fp32."""
    mode = cfg.train.amp
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" else "off"
    if mode == "off":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    augment: BatchAugment,
    loss_fn: nn.Module,
    batch_size: int,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    num_classes: int = 10,
    tta: str = "none",
    tta_shift: int = 1,
) -> EvalResult:
    """Loss, accuracy, per-class accuracy and confusion matrix of ``model`` (eval mode) on uint8 images.

    With ``tta`` other than "none" the prediction is the mean softmax over the views of engine/tta.py and the
    loss is its negative log-likelihood (``loss_fn`` is then not used: it expects logits).
    """
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=images.device, dtype=torch.float64)
    confusion = torch.zeros(num_classes * num_classes, device=images.device, dtype=torch.int64)
    for start in range(0, len(images), batch_size):
        y = labels[start : start + batch_size]
        if tta == "none":
            x = augment.eval(images[start : start + batch_size])
            with autocast():
                logits = model(x)
            total_loss += loss_fn(logits.float(), y).double() * len(y)
        else:
            probs = tta_probs(model, images[start : start + batch_size], augment, tta, tta_shift, autocast)
            logits = probs.clamp_min(1e-12).log()  # log of the averaged distribution; argmax unchanged
            total_loss += F.nll_loss(logits, y).double() * len(y)
        pred = logits.argmax(1)
        confusion += torch.bincount(y * num_classes + pred, minlength=num_classes * num_classes)
    model.train(was_training)
    conf = confusion.view(num_classes, num_classes).cpu()
    n = max(len(images), 1)
    per_class = (conf.diag().double() / conf.sum(1).clamp(min=1).double()).tolist()
    return EvalResult(
        loss=float(total_loss) / n,
        acc=float(conf.diag().sum()) / n,
        per_class_acc=per_class,
        confusion=conf.tolist(),
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The module whose state_dict we save (torch.compile wraps the model)."""
    return getattr(model, "_orig_mod", model)


def seed_for(seed: int, epoch: int) -> int:
    # Distinct, reproducible streams per (seed, epoch); large odd multiplier avoids collisions between seeds.
    return (seed * 1_000_003 + epoch * 7919 + 12345) % (2**63 - 1)


def set_determinism(cfg: RunConfig, device: torch.device) -> None:
    torch.manual_seed(cfg.train.seed)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.train.deterministic
        torch.backends.cudnn.deterministic = cfg.train.deterministic


# ----------------------------------------------------------------------------------------------------------------
# Run directories


def default_run_name(cfg: RunConfig, preset: str | None = None) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{preset or cfg.model.name}-{stamp}"


def prepare_run_dir(cfg: RunConfig, run_dir: Path | None, resume: bool) -> Path:
    if run_dir is None:
        run_dir = Path(cfg.out_dir) / (cfg.name or default_run_name(cfg))
    run_dir = Path(run_dir)
    if not resume and (run_dir / "checkpoints" / "last.pt").exists():
        raise CheckpointError(
            f"run directory '{run_dir}' already holds a run; pass --resume to continue it or choose another name"
        )
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    return run_dir


def load_run_config(run_dir: Path) -> RunConfig:
    from cifarlab.config import read_yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"'{run_dir}' is not a run directory (no config.yaml)")
    return config_from_dict(read_yaml(path))


# ----------------------------------------------------------------------------------------------------------------
# Training


DATA_INIT_IMAGES = 5000  # training images a model's init_from_data sees (airbench uses 5,000 for whitening)


class Trainer:
    """One training run. ``Trainer(cfg).fit()`` returns the summary dict (also written to summary.json)."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str | Path | None = None,
        resume: bool = False,
        data: CifarArrays | None = None,
        progress: bool | None = None,
        on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    ):
        self.cfg = cfg
        self.resume = resume
        self.progress = progress
        self.on_epoch_end = on_epoch_end
        self.device = resolve_device(cfg.train.device)
        self.run_dir = prepare_run_dir(cfg, Path(run_dir) if run_dir else None, resume)
        self._data = data

    # -- setup ---------------------------------------------------------------------------------------------------

    def _setup(self) -> None:
        cfg, device = self.cfg, self.device
        set_determinism(cfg, device)
        # Model first, right after seeding: same seed -> same init, and a bad model name or option fails
        # before the (slower) data loading.
        self.model = build_model(cfg, device)
        data = self._data or load_cifar10(cfg.data.dir, download=cfg.data.download, progress=self.progress)
        self.data_source = data.source
        d = cfg.data
        splits: Splits = make_splits(
            data, val_size=d.val_size, subset=d.subset, test_subset=d.test_subset, seed=d.split_seed
        )
        # Keep the whole dataset on the device as uint8 (4x smaller than float); batches are gathered there.
        self.train_x, self.train_y = splits.train_x.to(device), splits.train_y.to(device)
        self.val_x, self.val_y = splits.val_x.to(device), splits.val_y.to(device)
        self.test_x, self.test_y = splits.test_x.to(device), splits.test_y.to(device)

        self.augment = build_augment(cfg)
        init_from_data = getattr(unwrap(self.model), "init_from_data", None)
        if init_from_data is not None:
            # Data-dependent init (fast_net's patch whitening): a statistic of the first training images,
            # un-augmented; deterministic, and overwritten by the checkpoint when resuming.
            init_from_data(self.augment.eval(self.train_x[:DATA_INIT_IMAGES]).float())
        self.flip_base: torch.Tensor | None = None
        if cfg.augment.flip_mode == "alternate" and cfg.augment.flip:
            # One random orientation per training image, fixed for the run; odd epochs use the complement.
            gen = torch.Generator().manual_seed(seed_for(cfg.train.seed, -1))
            self.flip_base = (torch.rand(len(self.train_x), generator=gen) < 0.5).to(device)
        self.params = count_params(self.model)
        self.macs = count_macs(unwrap(self.model))
        self.mixer = BatchMixer(cfg.augment.mixup_alpha, cfg.augment.cutmix_alpha, cfg.augment.mix_prob)
        self.loss_fn = build_loss(cfg.loss).to(device)
        self.eval_loss_fn = nn.CrossEntropyLoss()  # validation/test loss is plain CE whatever the train loss
        self.regularizer = build_regularizer(self.model, cfg.optim)
        t = cfg.train
        n, bs, accum = len(self.train_x), t.batch_size, t.grad_accum_steps
        if accum > 1 and n < bs * accum:
            raise ConfigError(f"config key 'train.grad_accum_steps': got {accum}, but batch_size x grad_accum_steps "
                              f"= {bs * accum} exceeds the {n} training images")
        # Drop the last partial batch (as airbench and most recipes): constant steps/epoch, no size-1 BN batches.
        # One step = grad_accum_steps micro-batches of batch_size images.
        self.steps_per_epoch = max(1, n // (bs * accum)) if n >= bs * accum else 1
        self.optimizer = build_optimizer(self.model, cfg.optim, total_steps=self.steps_per_epoch * t.epochs)
        self.schedule = LRSchedule(self.optimizer, cfg.sched, t.epochs, self.steps_per_epoch,
                                   swa_start_epoch=t.swa_start_epoch, swa_lr=t.swa_lr)
        # Averaged copies start from the initial weights (before torch.compile wraps the model).
        self.ema = EMA(unwrap(self.model), t.ema_decay) if t.ema_decay > 0 else None
        self.swa = SWA(unwrap(self.model)) if t.swa_start_epoch is not None else None
        self.autocast = autocast_context(cfg, device)
        amp_fp16 = cfg.train.amp == "fp16" and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_fp16)
        if cfg.train.compile:
            self.model = torch.compile(self.model)

        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps completed
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None  # {"epoch", "val_acc", "val_loss"}
        self.bad_epochs = 0
        self.train_seconds = 0.0
        self.status = "running"
        self.swa_final = False  # True once the SWA average got its BatchNorm pass (end of training)

        if self.resume and (self.run_dir / "checkpoints" / "last.pt").exists():
            self._restore(load_checkpoint(self.run_dir / "checkpoints" / "last.pt", map_location=device))

        atomic_write_yaml(self.run_dir / "config.yaml", to_dict(cfg))
        env = environment_info(device)
        env["data_source"] = self.data_source
        atomic_write_json(self.run_dir / "env.json", env)
        self.metrics = MetricsWriter(self.run_dir, tensorboard=cfg.tensorboard)
        self.metrics.start(last_step=self.step, last_epoch=self.epoch)

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "format": "cifarlab-checkpoint-v1",
            "config": to_dict(self.cfg),
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "schedule": self.schedule.state_dict(),  # reduce-on-plateau state (the rest is a function of step)
            # Weights validation/test use when they are not "model": the EMA (or, at the end, the SWA average).
            "eval_model": self._eval_weights(),
            "swa": self.swa.state_dict() if self.swa is not None else None,
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "train_seconds": self.train_seconds,
            "status": self.status,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        if _comparable(state["config"]) != _comparable(to_dict(self.cfg)):
            raise CheckpointError(
                f"checkpoint in '{self.run_dir}' was written with another config; resume with the run's own "
                f"config.yaml (only {', '.join('.'.join(k) for k in RESUME_MAY_CHANGE)} may change)"
            )
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if state.get("schedule") is not None:  # checkpoints of older versions have no strategy state
            self.schedule.load_state_dict(state["schedule"])
        if self.ema is not None:
            self.ema.load_state_dict(state["eval_model"])
        if self.swa is not None:
            self.swa.load_state_dict(state["swa"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history, self.best = list(state["history"]), state["best"]
        self.bad_epochs, self.train_seconds = int(state["bad_epochs"]), float(state["train_seconds"])
        # A run that stopped early stays stopped; a completed one may continue if train.epochs was raised.
        self.status = "early_stopped" if state["status"] == "early_stopped" else "running"

    def _eval_weights(self) -> dict[str, Any] | None:
        if self.ema is not None:
            return self.ema.state_dict()
        if self.swa is not None and self.swa_final:
            return self.swa.module.state_dict()
        return None

    def _eval_model(self) -> nn.Module:
        """The weights validation and test look at: the EMA copy when EMA is on, else the model itself."""
        return self.ema.module if self.ema is not None else self.model

    def _evaluate(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  tta: str | None = None) -> EvalResult:
        t = self.cfg.train
        return evaluate(model, images, labels, self.augment, self.eval_loss_fn, t.eval_batch_size, self.autocast,
                        tta=t.tta if tta is None else tta, tta_shift=t.tta_shift)

    # -- loop ----------------------------------------------------------------------------------------------------

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, model = self.cfg, self.model
        model.train()
        on_epoch_start = getattr(unwrap(model), "on_epoch_start", None)
        if on_epoch_start is not None:  # a model's per-epoch switches (fast_net: freeze the whitening bias)
            on_epoch_start(epoch)
        torch.manual_seed(seed_for(cfg.train.seed, epoch))  # dropout etc.
        gen = torch.Generator(device=self.device).manual_seed(seed_for(cfg.train.seed, epoch))
        # Host-side RNG of mixup/cutmix (lam, box): Python numbers, so mixing never syncs the device.
        mix_rng = random.Random(seed_for(cfg.train.seed, epoch) * 2 + 1)
        n, bs, accum = len(self.train_x), cfg.train.batch_size, cfg.train.grad_accum_steps
        order = torch.randperm(n, generator=gen, device=self.device)
        losses = torch.zeros(self.steps_per_epoch, device=self.device)  # kept on device: no sync per step
        lrs: list[float] = []
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0
        bar = tqdm(
            total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", unit="step",
            disable=(not self.progress) if self.progress is not None else None, leave=False, dynamic_ncols=True,
        )
        start = time.perf_counter()
        for i in range(self.steps_per_epoch):
            lrs.append(self.schedule.apply(self.step))
            self.optimizer.zero_grad(set_to_none=True)
            for j in range(accum):
                first_image = (i * accum + j) * bs
                idx = order[first_image : first_image + bs]
                flips = None if self.flip_base is None else alternate_flip_mask(self.flip_base, idx, epoch)
                x = self.augment.train(self.train_x[idx], gen, flips)
                y = self.train_y[idx]
                x, target, y_acc = self.mixer(x, y, mix_rng)  # unchanged batch (target = y) when mixing is off
                with self.autocast():
                    logits = model(x)
                    loss = self.loss_fn(logits, target)
                # Mean over the effective batch: each micro-batch loss weighs 1/accum. The L1/L2 penalty is added
                # once per optimizer step, in fp32 outside autocast; the logged loss is the data term only.
                total = loss / accum if accum > 1 else loss
                if self.regularizer is not None and j == accum - 1:
                    total = total + self.regularizer()
                self.scaler.scale(total).backward()
                if accum > 1:
                    losses[i] += loss.detach() / accum
                else:
                    losses[i] = loss.detach()
                correct += (logits.detach().argmax(1) == y_acc).sum()
                seen += len(y)
            if cfg.optim.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update(unwrap(model))
            self.step += 1
            if (i + 1) % cfg.train.log_every == 0 or i + 1 == self.steps_per_epoch:
                # Checked only here, where we sync for the progress bar anyway: a per-step check would stall
                # the GPU pipeline every step. Divergence is caught at most log_every steps late.
                window = losses[max(0, i + 1 - cfg.train.log_every) : i + 1]
                if not bool(torch.isfinite(window).all()):
                    bad = float(window[~torch.isfinite(window)][0])
                    raise FloatingPointError(f"training loss became {bad} by step {self.step}")
                bar.set_postfix(loss=f"{float(window.mean()):.3f}", acc=f"{correct.item() / seen:.3f}",
                                refresh=False)
                bar.update((i + 1) - bar.n)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        bar.close()
        losses_cpu = losses.cpu().tolist()
        first = self.step - self.steps_per_epoch
        self.metrics.log_steps(
            [{"step": first + j + 1, "epoch": epoch + 1, "loss": losses_cpu[j], "lr": lrs[j]}
             for j in range(self.steps_per_epoch)]
        )
        return {
            "train_loss": sum(losses_cpu) / len(losses_cpu),
            "train_acc": correct.item() / max(seen, 1),
            "lr": lrs[-1],
            "seconds": seconds,
            "images_per_s": seen / seconds if seconds > 0 else float("nan"),
        }

    def _improved(self, row: dict[str, Any]) -> bool:
        es = self.cfg.train.early_stopping
        if self.best is None:
            return True
        if es.monitor == "val_loss":
            return row["val_loss"] < self.best["val_loss"] - es.min_delta
        return row["val_acc"] > self.best["val_acc"] + es.min_delta

    def fit(self) -> dict[str, Any]:
        finished = self._finished_summary()
        if finished is not None:
            return finished
        self._setup()
        cfg = self.cfg
        ckpt_dir = self.run_dir / "checkpoints"
        try:
            while self.epoch < cfg.train.epochs and self.status == "running":
                epoch = self.epoch
                try:
                    row: dict[str, Any] = {"epoch": epoch + 1, **self._train_epoch(epoch)}
                except FloatingPointError as exc:
                    self.status = "diverged"
                    self.diverged_reason = str(exc)
                    break
                validate = len(self.val_x) > 0 and (
                    (epoch + 1) % cfg.train.val_every == 0 or epoch + 1 == cfg.train.epochs)
                if validate:
                    val = self._evaluate(self._eval_model(), self.val_x, self.val_y)
                    row.update(val_loss=val.loss, val_acc=val.acc)
                    if cfg.sched.name == "plateau":
                        self.schedule.plateau_step(val.loss)  # sets the LR of the next epoch
                else:
                    row.update(val_loss=float("nan"), val_acc=float("nan"))
                if self.swa is not None and epoch + 1 >= cfg.train.swa_start_epoch:
                    self.swa.update(unwrap(self.model))
                self.epoch += 1
                self.train_seconds += row["seconds"]
                self.history.append(row)
                if validate and self._improved(row):
                    self.best = {"epoch": row["epoch"], "val_acc": row["val_acc"], "val_loss": row["val_loss"]}
                    self.bad_epochs = 0
                    save_checkpoint(ckpt_dir / "best.pt", self._state())
                elif validate:
                    self.bad_epochs += 1
                patience = cfg.train.early_stopping.patience
                if patience and self.bad_epochs >= patience:
                    self.status = "early_stopped"
                # Metrics before the checkpoint: a crash in between re-runs this epoch and cuts the rows back.
                self.metrics.log_epoch(row)
                save_checkpoint(ckpt_dir / "last.pt", self._state())
                self._print_epoch(row)
                if self.on_epoch_end:
                    self.on_epoch_end(epoch + 1, row)
            if self.status == "running":
                self.status = "completed"
            return self._finish()
        finally:
            self.metrics.close()

    def _finished_summary(self) -> dict[str, Any] | None:
        """On --resume of a run that already finished, its summary (the test set is never evaluated twice)."""
        path = self.run_dir / "summary.json"
        if not (self.resume and path.is_file()):
            return None
        summary = json.loads(path.read_text())
        done = summary.get("status") == "early_stopped" or (
            summary.get("status") == "completed" and summary.get("epochs_planned") == self.cfg.train.epochs
        )
        return summary if done else None

    def _print_epoch(self, row: dict[str, Any]) -> None:
        if self.progress is False:
            return
        val = f" val_loss {row['val_loss']:.4f} val_acc {row['val_acc']:.4f}" if row["val_acc"] == row["val_acc"] \
            else ""
        tqdm.write(
            f"epoch {row['epoch']:>3}/{self.cfg.train.epochs}  train_loss {row['train_loss']:.4f} "
            f"train_acc {row['train_acc']:.4f}{val}  lr {row['lr']:.3g}  {row['seconds']:.1f}s"
        )

    def _finish(self) -> dict[str, Any]:
        cfg = self.cfg
        summary: dict[str, Any] = {
            "run": self.run_dir.name,
            "status": self.status,
            "model": cfg.model.name,
            "params": self.params,
            "macs": self.macs,
            "device": str(self.device),
            "data_source": self.data_source,
            "train_images": len(self.train_x),
            "val_images": len(self.val_x),
            "test_images": len(self.test_x),
            "epochs_planned": cfg.train.epochs,
            "epochs_run": self.epoch,
            "steps": self.step,
            "train_time_s": self.train_seconds,
            "s_per_epoch": self.train_seconds / self.epoch if self.epoch else float("nan"),
            "best_epoch": self.best["epoch"] if self.best else None,
            "best_val_acc": self.best["val_acc"] if self.best else None,
        }
        self._plot_lr()
        if self.status == "diverged":
            summary["error"] = self.diverged_reason
            return self._write_summary(summary)
        last = self.history[-1]
        summary.update(
            final_train_loss=last["train_loss"], final_train_acc=last["train_acc"],
            final_val_loss=last["val_loss"], final_val_acc=last["val_acc"],
        )
        # The test set is used exactly once, here, with weights chosen without looking at it.
        weights = cfg.train.test_weights
        if weights == "best" and self.best is not None:
            best_state = load_checkpoint(self.run_dir / "checkpoints" / "best.pt", map_location=self.device)
            unwrap(self.model).load_state_dict(best_state["model"])
            if self.ema is not None:
                self.ema.load_state_dict(best_state["eval_model"])
        tested, averaged = self._eval_model(), "ema" if self.ema is not None else None
        if self.swa is not None and self.swa.n_averaged > 0:
            tested, averaged = self._finish_swa(summary), "swa"
        test = self._evaluate(tested, self.test_x, self.test_y)
        summary.update(
            test_weights=weights,
            test_averaged=averaged,  # None, "ema" or "swa": which average of those weights was tested
            tta=cfg.train.tta,
            test_loss=test.loss,
            test_acc=test.acc,
            per_class_test_acc=dict(zip(CLASSES, test.per_class_acc)),
            confusion=test.confusion,
        )
        if cfg.train.tta != "none":
            # What TTA adds, read off the same weights (one single-view pass each): the ablation of TTA for free.
            summary["test_acc_no_tta"] = self._evaluate(tested, self.test_x, self.test_y, tta="none").acc
            if len(self.val_x):
                summary["val_acc_no_tta"] = self._evaluate(tested, self.val_x, self.val_y, tta="none").acc
        return self._write_summary(summary)

    def _finish_swa(self, summary: dict[str, Any]) -> nn.Module:
        """BatchNorm statistics of the SWA average from one pass over the (un-augmented) training images, its
        validation numbers into ``summary``, and a last.pt whose ``eval_model`` is this SWA model."""
        assert self.swa is not None
        bs = self.cfg.train.eval_batch_size
        batches = (self.augment.eval(self.train_x[i : i + bs]) for i in range(0, len(self.train_x), bs))
        update_bn(self.swa.module, batches, self.autocast)
        self.swa_final = True
        summary["swa_epochs_averaged"] = self.swa.n_averaged
        if len(self.val_x):
            val = self._evaluate(self.swa.module, self.val_x, self.val_y)
            summary.update(swa_val_loss=val.loss, swa_val_acc=val.acc)
        save_checkpoint(self.run_dir / "checkpoints" / "last.pt", self._state())
        return self.swa.module

    def _plot_lr(self) -> None:
        try:
            plot_lr(self.run_dir)
        except Exception as exc:  # a figure is a convenience: never lose a finished run over it
            tqdm.write(f"cifarlab: warning: could not write lr.png ({type(exc).__name__}: {exc})")

    def _write_summary(self, summary: dict[str, Any]) -> dict[str, Any]:
        summary = _json_safe(summary)  # the returned summary is exactly what is on disk
        atomic_write_json(self.run_dir / "summary.json", summary)
        return summary


RESUME_MAY_CHANGE = (("train", "epochs"), ("train", "device"), ("train", "log_every"))


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict without the keys that may differ between a run and its resumption."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for section, key in RESUME_MAY_CHANGE:
        out[section].pop(key, None)
    return out


def _json_safe(obj: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def train(
    cfg: RunConfig,
    run_dir: str | Path | None = None,
    resume: bool = False,
    data: CifarArrays | None = None,
    progress: bool | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train one run; return its summary (also in ``<run_dir>/summary.json``)."""
    return Trainer(cfg, run_dir, resume, data, progress, on_epoch_end).fit()
