"""The bn-study driver: instrumented trainings of VGG-A / VGG-A+BN (/ noisy BN), their curves, figures, summary.

Layout of the output folder::

    settings.yaml, env.json          what was asked and what it ran on
    runs/<id>.npz, runs/<id>.json    one training run each (arrays + scalars); id = name + settings fingerprint
    <part>/*.csv, <part>/*.png       the curves and figures of each part (train, band, landscape, ics, noisy)
    <part>/done.json                 written last: the part is complete (skipped on re-run if settings match)
    summary.md, summary.json         the table + generated interpretation

Resumability is per run and per part: each run file and each part marker is written atomically, so an
interrupted study re-runs only the runs that had not finished, and a run in progress continues from its last
saved epoch (``runs/<id>.partial.pt``: weights, optimiser, RNG streams, curves so far; deleted when it ends).
With the Ray executor the independent trainings of all parts asked for run as parallel tasks first.
Runs are shared between parts through their fingerprint: e.g. the noisy-BN part reuses the train part's
VGG-A and VGG-A+BN runs at the same LR and step count instead of training them again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.analysis.bn_study.ics import ics_measure, layer_groups, snapshot_params
from cifarlab.analysis.bn_study.noisy_bn import make_noisy_bn, noise_rng_states, set_noise_rng_states
from cifarlab.analysis.bn_study.probes import eta_grid, named_trainable, probe_step
from cifarlab.analysis.bn_study.settings import MODELS, PARTS, StudySettings, to_dict
from cifarlab.data import BatchAugment, CifarArrays, load_cifar10, make_splits
from cifarlab.engine.checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    atomic_write_yaml,
    save_checkpoint,
)
from cifarlab.engine.environment import environment_info, resolve_device
from cifarlab.errors import ConfigError
from cifarlab.models import create

HALF = (0.5, 0.5, 0.5)
Log = Callable[[str], None]


# ----------------------------------------------------------------------------------------------------------
# Data


@dataclass
class StudyData:
    train_x: torch.Tensor  # uint8 (N, 3, 32, 32) on the device
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    normalize: BatchAugment  # eval(): normalisation only; train(): + crop/flip when augmentation is on
    augment: BatchAugment
    source: str


def synthetic_cifar(n: int, seed: int = 0) -> CifarArrays:
    """``n`` training + n//2 test random 32x32 images whose class shifts the mean colour (learnable, tiny)."""
    gen = torch.Generator().manual_seed(seed)

    def make(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(count) % 10
        y = y[torch.randperm(count, generator=gen)]
        base = torch.randint(0, 160, (count, 3, 32, 32), generator=gen)
        tint = torch.stack([(y * 9) % 96, (y * 37) % 96, (y * 71) % 96], dim=1).view(count, 3, 1, 1)
        return (base + tint).clamp(0, 255).to(torch.uint8), y.to(torch.int64)

    tx, ty = make(n)
    sx, sy = make(max(10, n // 2))
    return CifarArrays(train_x=tx, train_y=ty, test_x=sx, test_y=sy, source=f"synthetic ({n} images)")


def load_study_data(s: StudySettings, device: torch.device) -> StudyData:
    d = s.data
    if d.synthetic:
        arrays = synthetic_cifar(d.synthetic, d.split_seed)
        # Sizes of the real-data defaults do not fit a tiny synthetic set: keep 1/5 for validation, use all.
        splits = make_splits(arrays, val_size=min(d.val_size, d.synthetic // 5), seed=d.split_seed)
    else:
        arrays = load_cifar10(d.dir)
        splits = make_splits(arrays, val_size=d.val_size, subset=d.subset, test_subset=d.test_subset,
                             seed=d.split_seed)
    mean, std = (HALF, HALF) if d.normalize == "half" else ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    plain = BatchAugment(crop_padding=0, flip=False, mean=mean, std=std, channels_last=False)
    aug = BatchAugment(crop_padding=4, flip=True, mean=mean, std=std, channels_last=False)
    return StudyData(*(t.to(device) for t in (splits.train_x, splits.train_y, splits.val_x, splits.val_y,
                                               splits.test_x, splits.test_y)),
                     normalize=plain, augment=aug, source=arrays.source)


# ----------------------------------------------------------------------------------------------------------
# One instrumented run


@dataclass(frozen=True)
class RunSpec:
    model: str  # vgg_a, vgg_a_bn or vgg_a_noisy_bn
    optimizer: str
    lr: float
    steps: int
    momentum: float = 0.0
    weight_decay: float = 0.0
    augment: bool = False
    evaluate: bool = True  # validation each epoch + test once at the end (band/probe runs skip it: loss only)
    probe_every: int = 0  # Fig. 4 probes every k steps (0: none)
    etas: tuple[float, ...] = ()
    ics_every: int = 0  # Definition 2.1 every k steps (0: none)
    ics_layers: tuple[int, ...] = ()
    noise: tuple[float, ...] = ()  # (n_mu, n_sigma, r_mu, r_sigma) for vgg_a_noisy_bn

    @property
    def name(self) -> str:
        parts = [self.model, self.optimizer, f"lr{self.lr:g}", f"{self.steps}st"]
        if self.probe_every:
            parts.append("probe")
        if self.ics_every:
            parts.append("ics")
        return "-".join(parts)


def _common(s: StudySettings) -> dict[str, Any]:
    # What else decides a run's numbers (device is left out: a CPU and a GPU run are the "same" experiment).
    # data.dir is where the files are, not what they are: another spelling of the same path must not re-run.
    data = {k: v for k, v in to_dict(s.data).items() if k != "dir"}
    return {"seed": s.seed, "width_mult": s.width_mult, "batch_size": s.batch_size, "data": data}


def fingerprint(spec: RunSpec, s: StudySettings) -> str:
    text = json.dumps({"spec": asdict(spec), "common": _common(s)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def build_model(spec: RunSpec, s: StudySettings) -> nn.Module:
    if spec.model == "vgg_a_noisy_bn":
        n_mu, n_sigma, r_mu, r_sigma = spec.noise
        return make_noisy_bn(create("vgg_a_bn", width_mult=s.width_mult), seed=s.seed, n_mu=n_mu,
                             n_sigma=n_sigma, r_mu=r_mu, r_sigma=r_sigma)
    return create(spec.model, width_mult=s.width_mult)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, data: StudyData, batch: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in eval mode (BN running statistics, no BN noise)."""
    was = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for i in range(0, len(y), batch):
        out = model(data.normalize.eval(x[i : i + batch]))
        total_loss += float(F.cross_entropy(out, y[i : i + batch], reduction="sum"))
        correct += int((out.argmax(1) == y[i : i + batch]).sum())
    model.train(was)
    n = max(1, len(y))
    return total_loss / n, correct / n


def make_optimizer(spec: RunSpec, model: nn.Module) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum,
                               weight_decay=spec.weight_decay)
    if spec.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    raise ConfigError(f"unknown optimizer '{spec.optimizer}'; valid: sgd, adam")


@dataclass
class RunLog:
    step_loss: list[float] = field(default_factory=list)
    step_acc: list[float] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    ics: list[dict[str, float]] = field(default_factory=list)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _resume_state(checkpoint: Path | None, spec: RunSpec, key: str, log: Log) -> dict[str, Any] | None:
    if checkpoint is None or not checkpoint.is_file():
        return None
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception:  # truncated or foreign: start over rather than trust it
        log(f"  {spec.name}: unreadable partial checkpoint {checkpoint.name}, starting from step 0")
        return None
    if not isinstance(state, dict) or state.get("key") != key:
        log(f"  {spec.name}: partial checkpoint {checkpoint.name} belongs to other settings, starting from step 0")
        return None
    return state


def train_run(spec: RunSpec, s: StudySettings, data: StudyData, device: torch.device, log: Log,
              model: nn.Module | None = None, checkpoint: Path | None = None,
              on_epoch_end: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train ``spec`` for ``spec.steps`` SGD/Adam steps; probes and ICS measured without touching the trajectory.

    Returns plain arrays/scalars (see ``save_run``). ``model`` may be given (tests); else built from the spec.
    ``checkpoint``: where the run's full state is saved at epoch ends (every ``s.checkpoint_seconds``) and
    resumed from if present, so an interrupted run continues with exactly the numbers of an uninterrupted one.
    ``on_epoch_end(epoch)`` is called after each epoch's state is saved (tests interrupt runs with it).
    """
    torch.manual_seed(s.seed)  # same initialisation for a given architecture, whatever ran before
    if model is None:
        model = build_model(spec, s)
    model = model.to(device).train()
    opt = make_optimizer(spec, model)
    order_gen = torch.Generator().manual_seed(s.seed + 1)  # the same batch order for every run of a study
    aug_gen = torch.Generator(device=device).manual_seed(s.seed + 2)
    etas = list(spec.etas)
    groups = len(layer_groups(model)) if spec.ics_every else 0
    if spec.ics_every and max(spec.ics_layers) > groups:
        raise ConfigError(f"bn-study setting 'ics.layers': {list(spec.ics_layers)} exceeds the model's {groups} "
                          f"conv/linear layers")
    n = len(data.train_y)
    per_epoch = n // s.batch_size  # drop the last partial batch: BN statistics of a tiny batch are noise
    if per_epoch < 1:
        raise ConfigError(f"bn-study: {n} training images are fewer than one batch of {s.batch_size}")
    rec = RunLog()
    status, step, epoch = "completed", 0, 0
    train_seconds = probe_seconds = wall_before = 0.0
    key = fingerprint(spec, s)
    state = _resume_state(checkpoint, spec, key, log)
    if state is not None:
        # Everything that decides what happens next: weights + BN stats, optimiser, every RNG stream in use.
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        order_gen.set_state(state["order_rng"])
        aug_gen.set_state(state["aug_rng"].to(aug_gen.get_state().device))
        set_noise_rng_states(model, device, state["noise_rng"])
        rec = RunLog(**state["log"])
        step, epoch = state["step"], state["epoch"]
        train_seconds, probe_seconds, wall_before = state["train_seconds"], state["probe_seconds"], state["wall"]
        log(f"  {spec.name}: resuming at step {step} (epoch {epoch}) from {checkpoint.name}")
    t_start = time.perf_counter()
    last_save = t_start
    while step < spec.steps and status == "completed":
        perm = torch.randperm(n, generator=order_gen).to(device)
        ep_time, ep_losses, ep_accs = 0.0, [], []
        for b in range(per_epoch):
            if step >= spec.steps:
                break
            idx = perm[b * s.batch_size : (b + 1) * s.batch_size]
            t0 = time.perf_counter()
            xb = data.augment.train(data.train_x[idx], aug_gen) if spec.augment else data.normalize.eval(
                data.train_x[idx])
            yb = data.train_y[idx]
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            loss_v = float(loss.detach())
            if not math.isfinite(loss_v):
                status = "diverged"  # recorded and kept: a diverging LR is a result, not a crash
                log(f"  {spec.name}: loss {loss_v} at step {step}: diverged")
                break
            _sync(device)
            ep_time += time.perf_counter() - t0
            acc = float((out.detach().argmax(1) == yb).float().mean())
            tp = time.perf_counter()
            if spec.probe_every and step % spec.probe_every == 0:
                grads = {name: p.grad for name, p in named_trainable(model).items()}
                r = probe_step(model, xb, yb, F.cross_entropy, etas, grads=grads, loss=loss_v)
                rec.probes.append({"step": step, "loss": r.loss, "grad_norm": r.grad_norm, "losses": r.losses,
                                   "grad_diffs": r.grad_diffs, "betas": r.betas})
            before = snapshot_params(model) if spec.ics_every and step % spec.ics_every == 0 else None
            probe_seconds += time.perf_counter() - tp
            t1 = time.perf_counter()
            opt.step()
            _sync(device)
            ep_time += time.perf_counter() - t1
            if before is not None:
                tp = time.perf_counter()
                for r2 in ics_measure(model, xb, yb, F.cross_entropy, before, snapshot_params(model),
                                      list(spec.ics_layers)):
                    rec.ics.append({"step": step, "layer": r2.layer, "l2": r2.l2, "cos": r2.cos,
                                    "grad_norm": r2.grad_norm})
                probe_seconds += time.perf_counter() - tp
            rec.step_loss.append(loss_v)
            rec.step_acc.append(acc)
            ep_losses.append(loss_v)
            ep_accs.append(acc)
            step += 1
        epoch += 1
        train_seconds += ep_time
        row: dict[str, float] = {"epoch": epoch, "step": step, "seconds": ep_time,
                                 "fraction": len(ep_losses) / per_epoch,
                                 "train_loss": float(np.mean(ep_losses)) if ep_losses else float("nan"),
                                 "train_acc": float(np.mean(ep_accs)) if ep_accs else float("nan")}
        if spec.evaluate and status == "completed":
            row["val_loss"], row["val_acc"] = evaluate(model, data.val_x, data.val_y, data, s.eval_batch_size)
        rec.epochs.append(row)
        log(f"  {spec.name}: epoch {epoch} step {step}/{spec.steps} train_loss {row['train_loss']:.4f} "
            f"train_acc {row['train_acc']:.3f}" + (f" val_acc {row['val_acc']:.3f}" if "val_acc" in row else "")
            + f" {ep_time:.1f}s")
        now = time.perf_counter()
        if (checkpoint is not None and status == "completed" and step < spec.steps
                and now - last_save >= s.checkpoint_seconds):
            save_checkpoint(checkpoint, {
                "key": key, "step": step, "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "order_rng": order_gen.get_state(), "aug_rng": aug_gen.get_state().cpu(),
                "noise_rng": noise_rng_states(model, device), "log": asdict(rec),
                "train_seconds": train_seconds, "probe_seconds": probe_seconds, "wall": wall_before + now - t_start})
            last_save = time.perf_counter()
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    result: dict[str, Any] = {"name": spec.name, "spec": asdict(spec), "status": status, "steps_done": step,
                              "train_seconds": train_seconds, "probe_seconds": probe_seconds,
                              "wall_seconds": wall_before + time.perf_counter() - t_start,
                              "seconds_per_epoch": train_seconds / max(1e-9, sum(r["fraction"] for r in rec.epochs)),
                              "step_loss": rec.step_loss, "step_acc": rec.step_acc, "epochs": rec.epochs,
                              "probes": rec.probes, "ics": rec.ics, "model_state": model.state_dict()}
    if spec.evaluate and status == "completed":
        # The test set is touched once, here, at the end of the run.
        result["val_loss"], result["val_acc"] = evaluate(model, data.val_x, data.val_y, data, s.eval_batch_size)
        result["test_loss"], result["test_acc"] = evaluate(model, data.test_x, data.test_y, data,
                                                           s.eval_batch_size)
    return result


# ----------------------------------------------------------------------------------------------------------
# Run files


def _file(stem: Path, suffix: str) -> Path:
    # Not Path.with_suffix: run names contain dots ("lr0.5"), which it would take for a suffix.
    return stem.parent / (stem.name + suffix)


def save_run(path: Path, result: dict[str, Any]) -> None:
    """Arrays to ``<id>.npz`` and scalars/lists to ``<id>.json``, both atomically (json last: it marks done)."""
    arrays = {"step_loss": np.asarray(result["step_loss"], dtype=np.float64),
              "step_acc": np.asarray(result["step_acc"], dtype=np.float64)}
    if result["probes"]:
        arrays["probe_step"] = np.asarray([p["step"] for p in result["probes"]])
        for key in ("losses", "grad_diffs", "betas"):
            arrays[f"probe_{key}"] = np.asarray([p[key] for p in result["probes"]], dtype=np.float64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(_file(path, ".npz"), buf.getvalue())
    meta = {k: v for k, v in result.items() if k not in ("step_loss", "step_acc", "model_state")}
    atomic_write_json(_file(path, ".json"), meta)


def load_run(path: Path) -> dict[str, Any] | None:
    meta_path, npz_path = _file(path, ".json"), _file(path, ".npz")
    if not (meta_path.is_file() and npz_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        with np.load(npz_path) as z:
            meta["step_loss"] = z["step_loss"].tolist()
            meta["step_acc"] = z["step_acc"].tolist()
    except (OSError, ValueError, KeyError):
        return None  # a damaged file is re-run, not trusted
    return meta


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        atomic_write_text(path, "")
        return
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


# ----------------------------------------------------------------------------------------------------------
# The study


class Study:
    def __init__(self, s: StudySettings, out: Path, log: Log = print) -> None:
        self.s, self.out, self.log = s, Path(out), log
        try:
            self.device = resolve_device(s.device)
        except ConfigError as exc:  # its message names train.device; here the setting is bn-study's `device`
            raise ConfigError(str(exc).replace("config key 'train.device'", "bn-study setting 'device'")) from None
        self._data: StudyData | None = None

    @property
    def data(self) -> StudyData:
        if self._data is None:  # loaded lazily: a fully resumed study needs no data at all
            self._data = load_study_data(self.s, self.device)
            self.log(f"data: {self._data.source}; train {len(self._data.train_y)}, val {len(self._data.val_y)}, "
                     f"test {len(self._data.test_y)}")
        return self._data

    def path(self, spec: RunSpec) -> Path:
        return self.out / "runs" / f"{spec.name}-{fingerprint(spec, self.s)}"

    def load(self, spec: RunSpec) -> dict[str, Any] | None:
        return load_run(self.path(spec))

    def run(self, spec: RunSpec) -> dict[str, Any]:
        path = self.path(spec)
        done = load_run(path)
        if done is not None:
            self.log(f"  {spec.name}: done earlier, reusing {path.name}")
            return done
        self.log(f"  {spec.name}: training")
        partial = _file(path, ".partial.pt")
        result = train_run(spec, self.s, self.data, self.device, self.log, checkpoint=partial)
        save_run(path, result)
        partial.unlink(missing_ok=True)  # the finished run's files supersede it
        result.pop("model_state", None)
        return result

    def executor(self, pending: int) -> str:
        kind = self.s.executor.kind
        if kind == "auto":
            from cifarlab.experiments.executors import ray_available

            if self.s.scale != "paper" or pending < 2:
                return "local"
            if not ray_available():
                self.log(f"Ray is not installed: the {pending} trainings run one after another "
                         f"(pip install 'cifarlab[ray]' to run them in parallel)")
                return "local"
            return "ray"
        return kind

    def run_parallel(self, specs: list[RunSpec]) -> None:
        """Train the not-yet-finished ``specs`` as parallel Ray tasks (each saves its own files, resumable).

        A task that fails is reported and left unfinished; the part that needs it then trains it here and
        raises the error in plain sight.
        """
        from cifarlab.experiments.executors import ray_map

        todo = list({self.path(sp): sp for sp in specs if self.load(sp) is None}.values())
        kind = self.executor(len(todo))
        if kind != "ray" or not todo:
            return
        ex = self.s.executor
        gpus = ex.gpus_per_run
        if gpus is None:
            gpus = 0.25 if self.device.type == "cuda" else 0.0
        self.log(f"[ray] {len(todo)} trainings as Ray tasks ({ex.cpus_per_run:g} CPU, {gpus:g} GPU each)"
                 + (f" on {ex.address}" if ex.address else " on this machine"))
        settings = to_dict(self.s)
        if gpus == 0 and self.device.type == "cuda":
            settings["device"] = "cpu"  # a task without a GPU share must not touch the GPU
        jobs = [(sp, (asdict(sp), settings, str(self.out.resolve()))) for sp in todo]

        def on_result(spec: RunSpec, value: Any, error: str | None) -> None:
            self.log(f"  {spec.name}: " + (f"{value}" if error is None else f"failed ({error})"))

        ray_map(train_task, jobs, on_result, address=ex.address, cpus_per_task=ex.cpus_per_run, gpus_per_task=gpus)

    def part_done(self, part: str) -> bool:
        marker = self.out / part / "done.json"
        if not marker.is_file():
            return False
        try:
            return json.loads(marker.read_text()).get("settings") == self._part_settings(part)
        except (OSError, ValueError):
            return False

    def _part_settings(self, part: str) -> dict[str, Any]:
        return {"common": _common(self.s), "part": to_dict(getattr(self.s, part))}

    def mark_done(self, part: str, seconds: float) -> None:
        atomic_write_json(self.out / part / "done.json", {"settings": self._part_settings(part),
                                                          "seconds": seconds})

    # --- run lists of each part ---------------------------------------------------------------------------
    def specs(self, part: str) -> list[RunSpec]:
        s = self.s
        if part == "train":
            t = s.train
            return [RunSpec(m, t.optimizer, lr, t.steps, t.momentum, t.weight_decay, t.augment)
                    for m in MODELS for lr in t.lrs]
        if part == "band":
            b = s.band
            return [RunSpec(m, b.optimizer, lr, b.steps, evaluate=False) for m in MODELS for lr in b.lrs]
        if part == "landscape":
            ls = s.landscape
            etas = tuple(eta_grid(ls.lr, ls.eta_count, ls.eta_low, ls.eta_high))
            return [RunSpec(m, "sgd", ls.lr, ls.steps, ls.momentum, evaluate=False, probe_every=ls.probe_every,
                            etas=etas) for m in MODELS]
        if part == "ics":
            ic = s.ics
            return [RunSpec(m, "sgd", ic.lr, ic.steps, ic.momentum, evaluate=False, ics_every=ic.every,
                            ics_layers=tuple(ic.layers)) for m in MODELS]
        if part == "noisy":
            n, t = s.noisy, s.train
            # Same optimiser settings as the train part, so its runs at this LR/step count are reused.
            base = [RunSpec(m, "sgd", n.lr, n.steps, t.momentum, t.weight_decay, t.augment) for m in MODELS]
            return [*base, RunSpec("vgg_a_noisy_bn", "sgd", n.lr, n.steps, t.momentum, t.weight_decay, t.augment,
                                   noise=(n.n_mu, n.n_sigma, n.r_mu, n.r_sigma))]
        raise ConfigError(f"unknown bn-study part '{part}'; valid: {', '.join(PARTS)}")


def train_task(spec: dict[str, Any], settings: dict[str, Any], out: str) -> str:
    """One training as a Ray task: its own data and device, files written to ``out/runs`` like a local run."""
    from cifarlab.analysis.bn_study.settings import settings_from_dict

    s = settings_from_dict(settings)
    run_spec = RunSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
    result = Study(s, Path(out), log=lambda _line: None).run(run_spec)
    return f"{result['status']}, {result['steps_done']} steps, {result['wall_seconds']:.0f} s"


def run_study(s: StudySettings, out: str | Path, log: Log = print) -> dict[str, Any]:
    """Run the selected parts (skipping complete ones), write figures/CSVs and the summary; return the summary."""
    from cifarlab.analysis.bn_study import interpret, plots

    study = Study(s, Path(out), log)
    study.out.mkdir(parents=True, exist_ok=True)
    atomic_write_yaml(study.out / "settings.yaml", to_dict(s))
    atomic_write_json(study.out / "env.json", environment_info(study.device))
    t_all = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    # Independent trainings of every part asked for go out together (Ray executor); the loop below then
    # finds them finished. With the local executor this does nothing and the loop trains them in turn.
    study.run_parallel([sp for part in PARTS if part in s.parts and not study.part_done(part)
                        for sp in study.specs(part)])
    for part in PARTS:
        if part not in s.parts:
            # A part not asked for this time still enters the summary when an earlier invocation completed it.
            if study.part_done(part):
                found = [study.load(spec) for spec in study.specs(part)]
                if all(r is not None for r in found):
                    results[part] = [r for r in found if r is not None]
            continue
        skip = study.part_done(part)
        log(f"[{part}] " + ("complete, loading results" if skip else "running"))
        t0 = time.perf_counter()
        runs = [study.run(spec) for spec in study.specs(part)]
        results[part] = runs
        if not skip:
            plots.write_part(part, runs, study.out / part, s)
            study.mark_done(part, time.perf_counter() - t0)
    summary = interpret.summarize(results, s)
    summary["wall_seconds"] = time.perf_counter() - t_all
    atomic_write_json(study.out / "summary.json", summary)
    atomic_write_text(study.out / "summary.md", interpret.to_markdown(summary))
    log(interpret.to_markdown(summary))
    return summary


__all__ = ["RunSpec", "Study", "StudyData", "load_study_data", "run_study", "synthetic_cifar", "train_run",
           "train_task"]
