"""The training engine: one run, from a ``RunConfig`` to a run directory with metrics, checkpoints and summary.

The story of a run:
  1. resolve the device, seed everything, create (or reopen, on --resume) the run directory;
  2. load CIFAR-10 once as uint8 tensors and carve train/val/test splits; move them to the device;
  3. build model (channels_last), loss, optimizer and LR schedule from the config (engine/build.py);
  4. each epoch: shuffle + augment (+ mixup/cutmix) on the device in batches, train (gradient accumulation,
     L1/L2 penalties, EMA/Lookahead updates), evaluate on the validation split (averaged weights and TTA when
     configured), step reduce-on-plateau, add the weights to the SWA average, write metrics and the ``last``
     checkpoint (and ``best`` when validation improved), maybe stop early;
  5. evaluate the chosen weights (``train.test_weights``; the SWA average after a BatchNorm pass when SWA is on)
     on the test set exactly once; write summary.json and lr.png.

Instrumentation plugs in through callbacks (engine/callbacks.py): hooks at fit/epoch start and end, after the
backward pass and after each step, with their state kept in the checkpoint.

Reproducibility: every epoch reseeds the global RNG and a per-epoch data generator from (seed, epoch), so the
result of epoch e does not depend on whether the process was restarted before it. This is what makes
``--resume`` give the same numbers as an uninterrupted run.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from cifarlab.config import RunConfig, read_yaml, to_dict
from cifarlab.data import CLASSES, CifarArrays, alternate_flip_mask
from cifarlab.engine.averaging import update_bn
from cifarlab.engine.build import (
    build_augment,
    build_components,
    build_model,
    load_splits,
    planned_epochs,
    resolve_amp,
    seed_for,
    set_determinism,
    steps_per_epoch,
    unwrap,
)
from cifarlab.engine.callbacks import Callback, CallbackList, StepContext, default_callbacks, improved
from cifarlab.engine.checkpoint import load_checkpoint, save_checkpoint
from cifarlab.engine.environment import environment_info, resolve_device
from cifarlab.engine.evaluate import EvalResult, averaged_state, evaluate
from cifarlab.engine.metrics import MetricsWriter, ProgressLog, percent
from cifarlab.engine.rundir import (
    RunLock,
    check_same_run,
    finished_summary,
    prepare_run_dir,
    remove_stale_temporaries,
)
from cifarlab.engine.schedules import plot_lr
from cifarlab.engine.tta import tta_label
from cifarlab.io import atomic_write_json, atomic_write_yaml, json_safe
from cifarlab.models.protocol import DataInit
from cifarlab.models.summary import count_macs, count_params

DATA_INIT_IMAGES = 5000  # training images a model's init_from_data sees (airbench uses 5,000 for whitening)
CHECKPOINT_FORMAT = "cifarlab-checkpoint-v2"  # v2: "averaged" (was "eval_model"), "callbacks"


class Trainer:
    """One training run. ``Trainer(cfg).fit()`` returns the summary dict (also written to summary.json).

    Public state a callback may read: ``cfg``, ``device``, ``run_dir``, ``model`` (``raw_model`` unwraps
    torch.compile), ``optimizer``, ``augment``, ``train_x/y``, ``val_x/y``, ``step`` (completed optimizer
    steps), ``epoch`` (completed epochs), ``epochs`` (planned), ``steps_per_epoch``, ``total_steps``,
    ``history``, ``status``. ``log`` prints the run's lines (``ProgressLog``; silent with ``progress=False``).
    A callback stops the run by setting ``status`` to ``early_stopped`` (or ``pruned``: a tune trial).
    ``withhold_test``: the run never sees the test split (not even loaded to the device) and is not tested at
    the end; its summary says ``test_withheld`` (the trials of ``cifarlab tune`` are selected on validation).
    """

    def __init__(self, cfg: RunConfig, run_dir: str | Path | None = None, resume: bool = False,
                 data: CifarArrays | None = None, progress: bool | None = None,
                 callbacks: Iterable[Callback] = (), withhold_test: bool = False) -> None:
        self.cfg, self.resume, self.progress, self.withhold_test = cfg, resume, progress, withhold_test
        self.device = resolve_device(cfg.train.device)
        self.run_dir = prepare_run_dir(cfg, Path(run_dir) if run_dir else None, resume)
        self._data = data
        self.log = ProgressLog(enabled=progress is not False)  # phase, resume and epoch lines
        self.callbacks = CallbackList([*default_callbacks(cfg.train.early_stopping.patience, self.log), *callbacks])
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps completed
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None  # {"epoch", "val_acc", "val_loss"}
        self.train_seconds = 0.0
        self.status = "running"
        self.error: str | None = None  # why a diverged run diverged
        self.swa_final = False  # True once the SWA average got its BatchNorm pass (end of training)

    @property
    def raw_model(self) -> nn.Module:
        return unwrap(self.model)

    # -- setup ---------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Seed, build the model, load the data, build the loop's components; restore a checkpoint on resume."""
        cfg, device, log = self.cfg, self.device, self.log
        # The run's label first (a sweep's variant, a tune trial): its lines below are known to be its own.
        log.line(f"run {cfg.name or self.run_dir.name}: {cfg.model.name} on {device}, {self.run_dir}")
        set_determinism(cfg, device)
        # Model first, right after seeding: same seed -> same init, and a bad model name or option fails
        # before the (slower) data loading.
        with log.phase(f"building model {cfg.model.name}") as note:
            self.model = build_model(cfg, device)
            self.params = count_params(self.model)
            note(f"{self.params:,} parameters")
        with log.phase("loading data") as note:
            self._load_data(device)
            note(f"{len(self.train_x):,} train / {len(self.val_x):,} val / {len(self.test_x):,} test images "
                 f"({self.data_source})")
        self.augment = build_augment(cfg)
        if isinstance(self.raw_model, DataInit):
            # A statistic of the first training images, un-augmented; deterministic, overwritten on resume.
            self.raw_model.init_from_data(self.augment.eval(self.train_x[:DATA_INIT_IMAGES]).float())
        self.flip_base: torch.Tensor | None = None
        if cfg.augment.flip_mode == "alternate" and cfg.augment.flip:
            # One random orientation per training image, fixed for the run; odd epochs use the complement.
            gen = torch.Generator().manual_seed(seed_for(cfg.train.seed, -1))
            self.flip_base = (torch.rand(len(self.train_x), generator=gen) < 0.5).to(device)
        self.macs = count_macs(self.raw_model)
        self.steps_per_epoch = steps_per_epoch(cfg, len(self.train_x))
        self.epochs = planned_epochs(cfg, self.steps_per_epoch)
        self.total_steps = cfg.train.max_steps or self.epochs * self.steps_per_epoch
        c = build_components(cfg, self.model, device, self.steps_per_epoch)
        self.loss_fn, self.regularizer, self.mixer = c.loss_fn, c.regularizer, c.mixer
        self.optimizer, self.schedule, self.scaler, self.autocast = c.optimizer, c.schedule, c.scaler, c.autocast
        self.ema, self.swa = c.ema, c.swa
        self.eval_loss_fn = nn.CrossEntropyLoss()  # validation/test loss is plain CE whatever the train loss
        if cfg.train.compile:
            with log.phase("compiling model (torch.compile)") as note:
                self.model = torch.compile(self.model)
                note("lazy: the first steps compile, epoch 1 is slower")
        (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)  # the run starts: now it is written
        remove_stale_temporaries(self.run_dir)
        last = self.run_dir / "checkpoints" / "last.pt"
        if self.resume and last.exists():
            self._restore(load_checkpoint(last, map_location=device))
            log.line(f"resuming from epoch {self.epoch} (checkpoint {last}); {self.epochs - self.epoch} of "
                     f"{self.epochs} epochs to go")
        atomic_write_yaml(self.run_dir / "config.yaml", to_dict(cfg))
        env = environment_info(device)
        env["data_source"] = self.data_source
        env["amp"] = resolve_amp(cfg.train.amp, device)  # what train.amp=auto chose on this machine
        atomic_write_json(self.run_dir / "env.json", env)
        self.metrics = MetricsWriter(self.run_dir, tensorboard=cfg.tensorboard)
        self.metrics.start(last_step=self.step, last_epoch=self.epoch)

    def _load_data(self, device: torch.device) -> None:
        splits, self.data_source = load_splits(self.cfg, self._data, self.progress)
        # Keep the whole dataset on the device as uint8 (4x smaller than float); batches are gathered there.
        self.train_x, self.train_y = splits.train_x.to(device), splits.train_y.to(device)
        self.val_x, self.val_y = splits.val_x.to(device), splits.val_y.to(device)
        if self.withhold_test:  # an empty test split: nothing of it is on the device or can be evaluated
            splits.test_x, splits.test_y = splits.test_x[:0], splits.test_y[:0]
        self.test_x, self.test_y = splits.test_x.to(device), splits.test_y.to(device)

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": to_dict(self.cfg),
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "schedule": self.schedule.state_dict(),  # reduce-on-plateau state (the rest is a function of step)
            # The averaged weights validation/test look at, when not the model's own: EMA or (at the end) SWA.
            "averaged": self._averaged_state(),
            "swa": self.swa.state_dict() if self.swa is not None else None,
            "callbacks": self.callbacks.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "best": self.best,
            "train_seconds": self.train_seconds,
            "status": self.status,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        check_same_run(state["config"], to_dict(self.cfg), self.run_dir)
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if state.get("schedule") is not None:  # checkpoints of older versions have no strategy state
            self.schedule.load_state_dict(state["schedule"])
        if self.ema is not None:
            self.ema.load_state_dict(averaged_state(state))
        if self.swa is not None:
            self.swa.load_state_dict(state["swa"])
        self.callbacks.load_state_dict(state.get("callbacks") or {})
        if "bad_epochs" in state:  # v1 kept early stopping's counter in the trainer
            self.callbacks.load_state_dict({"EarlyStopping": {"bad_epochs": state["bad_epochs"]}})
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history, self.best = list(state["history"]), state["best"]
        self.train_seconds = float(state["train_seconds"])
        # A run that stopped early stays stopped; a completed one may continue if train.epochs was raised.
        self.status = "early_stopped" if state["status"] == "early_stopped" else "running"

    def _averaged_state(self) -> dict[str, Any] | None:
        if self.ema is not None:
            return self.ema.state_dict()
        if self.swa is not None and self.swa_final:
            return self.swa.module.state_dict()
        return None

    def averaged_model(self) -> nn.Module:
        """The weights validation and test look at: the EMA copy when EMA is on, else the model itself."""
        return self.ema.module if self.ema is not None else self.model

    def evaluate(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 tta: str | None = None) -> EvalResult:
        t = self.cfg.train
        return evaluate(model, images, labels, self.augment, self.eval_loss_fn, t.eval_batch_size, self.autocast,
                        tta=t.tta if tta is None else tta, tta_shift=t.tta_shift, tta_confidence=t.tta_confidence)

    # -- loop ----------------------------------------------------------------------------------------------------

    def _batch(self, order: torch.Tensor, first: int, gen: torch.Generator, epoch: int) -> tuple[Any, Any, Any]:
        bs = self.cfg.train.batch_size
        idx = order[first : first + bs]
        flips = None if self.flip_base is None else alternate_flip_mask(self.flip_base, idx, epoch)
        return self.augment.train(self.train_x[idx], gen, flips), self.train_y[idx], idx

    def _train_step(self, i: int, epoch: int, order: torch.Tensor, gen: torch.Generator,
                    mix_rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step (``grad_accum_steps`` micro-batches); returns its data loss and correct count."""
        cfg, model, accum = self.cfg, self.model, self.cfg.train.grad_accum_steps
        self.optimizer.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        for j in range(accum):
            x, y, idx = self._batch(order, (i * accum + j) * cfg.train.batch_size, gen, epoch)
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
            step_loss += loss.detach() / accum
            correct += (logits.detach().argmax(1) == y_acc).sum()
        ctx = StepContext(self.step, epoch, i, idx, x, y, target, logits.detach(), loss.detach())
        self.callbacks.call("on_after_backward", self, ctx)
        if cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.raw_model)
        self.callbacks.call("on_step_end", self, ctx)
        self.step += 1
        return step_loss, correct

    def _epoch_steps(self) -> int:
        """Steps of the coming epoch: all of them, or what is left of ``train.max_steps``."""
        max_steps = self.cfg.train.max_steps
        return self.steps_per_epoch if max_steps is None else min(self.steps_per_epoch, max_steps - self.step)

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch (0-based); returns its metrics row (without validation)."""
        cfg = self.cfg
        self.model.train()
        self.callbacks.call("on_epoch_start", self, epoch)
        torch.manual_seed(seed_for(cfg.train.seed, epoch))  # dropout etc.
        gen = torch.Generator(device=self.device).manual_seed(seed_for(cfg.train.seed, epoch))
        # Host-side RNG of mixup/cutmix (lam, box): Python numbers, so mixing never syncs the device.
        mix_rng = random.Random(seed_for(cfg.train.seed, epoch) * 2 + 1)
        order = torch.randperm(len(self.train_x), generator=gen, device=self.device)
        n_steps, log_every = self._epoch_steps(), cfg.train.log_every
        losses = torch.zeros(n_steps, device=self.device)  # kept on device: no sync per step
        correct = torch.zeros(n_steps, device=self.device, dtype=torch.int64)
        lrs: list[float] = []
        bar = tqdm(total=n_steps, desc=f"epoch {epoch + 1}/{self.epochs}", unit="step", leave=False,
                   disable=(not self.progress) if self.progress is not None else None, dynamic_ncols=True)
        start = time.perf_counter()
        for i in range(n_steps):
            lrs.append(self.schedule.apply(self.step))
            losses[i], correct[i] = self._train_step(i, epoch, order, gen, mix_rng)
            if (i + 1) % log_every == 0 or i + 1 == n_steps:
                # Checked only here, where we sync for the progress bar anyway: a per-step check would stall
                # the GPU pipeline every step. Divergence is caught at most log_every steps late.
                window = losses[max(0, i + 1 - log_every) : i + 1]
                if not bool(torch.isfinite(window).all()):
                    raise FloatingPointError(f"training loss became {float(window[~torch.isfinite(window)][0])} "
                                             f"by step {self.step}")
                bar.set_postfix(loss=f"{float(window.mean()):.3f}", refresh=False)
                bar.update((i + 1) - bar.n)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        bar.close()
        return self._epoch_row(epoch, losses, correct, lrs, seconds)

    def _epoch_row(self, epoch: int, losses: torch.Tensor, correct: torch.Tensor, lrs: list[float],
                   seconds: float) -> dict[str, Any]:
        per_step = self.cfg.train.batch_size * self.cfg.train.grad_accum_steps
        loss_list, acc_list = losses.cpu().tolist(), (correct.cpu().double() / per_step).tolist()
        first = self.step - len(loss_list)
        self.metrics.log_steps([{"step": first + j + 1, "epoch": epoch + 1, "loss": loss_list[j],
                                 "acc": acc_list[j], "lr": lrs[j]} for j in range(len(loss_list))])
        seen = per_step * len(loss_list)
        return {"epoch": epoch + 1, "train_loss": sum(loss_list) / len(loss_list),
                "train_acc": sum(acc_list) / len(acc_list), "lr": lrs[-1], "seconds": seconds,
                "images_per_s": seen / seconds if seconds > 0 else float("nan")}

    def _validate(self, row: dict[str, Any]) -> None:
        """Validation numbers into ``row``; reduce-on-plateau, best-epoch record and best.pt follow from them."""
        t = self.cfg.train
        due = len(self.val_x) > 0 and (row["epoch"] % t.val_every == 0 or row["epoch"] == self.epochs)
        if not due:
            row.update(val_loss=float("nan"), val_acc=float("nan"))
            return
        val = self.evaluate(self.averaged_model(), self.val_x, self.val_y)
        row.update(val_loss=val.loss, val_acc=val.acc)
        if not math.isfinite(val.loss):
            raise FloatingPointError(f"validation loss became {val.loss} after epoch {row['epoch']}")
        if self.cfg.sched.name == "plateau":
            self.schedule.plateau_step(val.loss)  # sets the LR of the next epoch
        row["improved"] = improved(row, self.best, self.cfg.train.early_stopping)
        if row["improved"]:
            self.best = {"epoch": row["epoch"], "val_acc": row["val_acc"], "val_loss": row["val_loss"]}

    def _run_epoch(self) -> None:
        epoch, ckpt_dir = self.epoch, self.run_dir / "checkpoints"
        row = self.train_epoch(epoch)
        self._validate(row)
        if self.swa is not None and epoch + 1 >= self.cfg.train.swa_start_epoch:
            self.swa.update(self.raw_model)
        self.epoch += 1
        self.train_seconds += row["seconds"]
        self.callbacks.call("on_epoch_end", self, epoch, row)
        improved = row.pop("improved", False)
        self.history.append(row)
        if improved:
            save_checkpoint(ckpt_dir / "best.pt", self.state_dict())
        # Metrics before the checkpoint: a crash in between re-runs this epoch and cuts the rows back.
        self.metrics.log_epoch(row, self.step)
        save_checkpoint(ckpt_dir / "last.pt", self.state_dict())
        self.callbacks.call("on_checkpoint", self, epoch, row)

    def fit(self) -> dict[str, Any]:
        if self.resume:
            finished = finished_summary(self.run_dir, self.cfg)
            if finished is not None:  # nothing to do, but never silently under another config
                check_same_run(read_yaml(self.run_dir / "config.yaml"), to_dict(self.cfg), self.run_dir)
                self.log.line(f"run {self.cfg.name or self.run_dir.name} already finished "
                              f"({finished.get('status')}); nothing to do")
                return finished
        lock = RunLock(self.run_dir)
        existed = self.run_dir.exists()
        lock.acquire()
        try:
            self.setup()
        except BaseException:
            lock.release()
            if not existed and not (self.run_dir / "config.yaml").exists():
                shutil.rmtree(self.run_dir, ignore_errors=True)  # a failed start leaves nothing behind
            raise
        try:
            self.callbacks.call("on_fit_start", self)
            while self.epoch < self.epochs and self.step < self.total_steps and self.status == "running":
                try:
                    self._run_epoch()
                except FloatingPointError as exc:
                    self.status, self.error = "diverged", str(exc)
            if self.status == "running":
                self.status = "completed"
            return self._finish()
        finally:
            self.metrics.close()
            lock.release()

    # -- the end: the test set, once ---------------------------------------------------------------------------

    def _summary_head(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "run": self.run_dir.name, "status": self.status, "model": cfg.model.name,
            "params": self.params, "params_total": sum(p.numel() for p in self.raw_model.parameters()),
            "macs": self.macs, "device": str(self.device),
            "amp": resolve_amp(cfg.train.amp, self.device), "data_source": self.data_source,
            "train_images": len(self.train_x), "val_images": len(self.val_x), "test_images": len(self.test_x),
            "epochs_planned": self.epochs, "max_steps": cfg.train.max_steps, "epochs_run": self.epoch,
            "steps": self.step, "train_time_s": self.train_seconds,
            "s_per_epoch": self.train_seconds / self.epoch if self.epoch else float("nan"),
            "best_epoch": self.best["epoch"] if self.best else None,
            "best_val_acc": self.best["val_acc"] if self.best else None,
        }

    def _finish(self) -> dict[str, Any]:
        summary = self._summary_head()
        plot_lr(self.run_dir, warn=tqdm.write)
        if self.status != "diverged" and self.history:
            last = self.history[-1]
            summary.update(final_train_loss=last["train_loss"], final_train_acc=last["train_acc"],
                           final_val_loss=last["val_loss"], final_val_acc=last["val_acc"])
            summary.update(test_withheld=True) if self.withhold_test else self._test(summary)
        if self.status == "diverged":
            summary["status"], summary["error"] = "diverged", self.error
        self.callbacks.call("on_fit_end", self, summary)
        summary = json_safe(summary)  # the returned summary is exactly what is on disk
        self.metrics.log_final(summary, to_dict(self.cfg))
        atomic_write_json(self.run_dir / "summary.json", summary)
        return summary

    def _test(self, summary: dict[str, Any]) -> None:
        """The test set is used exactly once, here, with weights chosen without looking at it."""
        cfg = self.cfg
        if cfg.train.test_weights == "best" and self.best is not None:
            best_state = load_checkpoint(self.run_dir / "checkpoints" / "best.pt", map_location=self.device)
            self.raw_model.load_state_dict(best_state["model"])
            if self.ema is not None:
                self.ema.load_state_dict(averaged_state(best_state))
        tested, averaged = self.averaged_model(), "ema" if self.ema is not None else None
        if self.swa is not None and self.swa.n_averaged > 0:
            tested, averaged = self._finish_swa(summary), "swa"
        tta = "" if cfg.train.tta == "none" else f", TTA {tta_label(cfg.train.tta, cfg.train.tta_confidence)}"
        with self.log.phase(f"evaluating test ({len(self.test_x):,} images{tta})") as note:
            start = time.perf_counter()
            test = self.evaluate(tested, self.test_x, self.test_y)
            summary["test_time_s"] = time.perf_counter() - start  # with train_time_s: airbench's "time" (+ TTA)
            note(f"test_acc {percent(test.acc)}")
        summary.update(test_weights=cfg.train.test_weights, averaged=averaged, tta=cfg.train.tta,
                       tta_confidence=cfg.train.tta_confidence,
                       test_loss=test.loss, test_acc=test.acc,
                       per_class_test_acc=dict(zip(CLASSES, test.per_class_acc)), confusion=test.confusion)
        if not math.isfinite(test.loss):
            self.status, self.error = "diverged", f"test loss is {test.loss}"
        if cfg.train.tta != "none":
            # What TTA adds, read off the same weights (one single-view pass each): the ablation of TTA for free.
            with self.log.phase("evaluating without TTA (what TTA adds)") as note:
                summary["test_acc_no_tta"] = self.evaluate(tested, self.test_x, self.test_y, tta="none").acc
                if len(self.val_x):
                    summary["val_acc_no_tta"] = self.evaluate(tested, self.val_x, self.val_y, tta="none").acc
                note(f"test_acc {percent(summary['test_acc_no_tta'])}")

    def _finish_swa(self, summary: dict[str, Any]) -> nn.Module:
        """BatchNorm statistics of the SWA average from one pass over the (un-augmented) training images, its
        validation numbers into ``summary``, and a last.pt whose ``averaged`` weights are this SWA model."""
        assert self.swa is not None
        bs = self.cfg.train.eval_batch_size
        batches = (self.augment.eval(self.train_x[i : i + bs]) for i in range(0, len(self.train_x), bs))
        with self.log.phase("SWA: BatchNorm statistics of the average"):
            update_bn(self.swa.module, batches, self.autocast)
        self.swa_final = True
        summary["swa_epochs_averaged"] = self.swa.n_averaged
        if len(self.val_x):
            val = self.evaluate(self.swa.module, self.val_x, self.val_y)
            summary.update(swa_val_loss=val.loss, swa_val_acc=val.acc)
        save_checkpoint(self.run_dir / "checkpoints" / "last.pt", self.state_dict())
        return self.swa.module

def train(cfg: RunConfig, run_dir: str | Path | None = None, resume: bool = False, data: CifarArrays | None = None,
          progress: bool | None = None, callbacks: Iterable[Callback] = (), withhold_test: bool = False
          ) -> dict[str, Any]:
    """Train one run; return its summary (also in ``<run_dir>/summary.json``)."""
    return Trainer(cfg, run_dir, resume, data, progress, callbacks, withhold_test).fit()
