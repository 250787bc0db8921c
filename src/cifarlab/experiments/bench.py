"""``cifarlab bench``: how fast training is here, side by side, measured in one process (these machines are noisy).

Four measurements, each printed as it finishes and saved to ``bench.json``:

1. **Engine overhead**: images/s of cifarlab's real training step (``Trainer.train_epoch``'s step loop:
   uint8 gather, augmentation on the device, forward, backward, optimiser, LR schedule, on-device metrics) vs
   the bare forward/backward/step on one pre-made float batch, for the same model and batch size. The
   epoch's fixed cost outside the loop (shuffle, writing steps.csv) is reported apart, in ms per epoch.
2. **Conventional pipeline** (what the reports we replace do): a per-image ``Dataset`` returning a float
   tensor after a per-image random crop (pad 4) and flip, batched by a ``DataLoader`` with worker processes,
   fed to the same model in the default (NCHW) memory format. Ratio = cifarlab engine / conventional.
3. **Roofline**: the machine's measured fp32 peak for a large 3x3 convolution and a large matrix product,
   and the GFLOP/s each training step achieves (3 x 2 x MACs per image: forward + two backward products).
4. **Time to accuracy** (``--recipe fast-cpu``, opt-in: it trains): the recipe's wall time and final test
   accuracy for each seed, mean ± std.

Rounds are interleaved (bare, engine, conventional, bare, ...). Throughputs are the best round of each; the
engine overhead is the median over rounds of the engine/bare ratio within a round (timed back to back), so a
burst of load from another process hits both sides of a ratio alike.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cifarlab.config import load_config
from cifarlab.data import CIFAR10_MEAN, CIFAR10_STD, CifarArrays
from cifarlab.engine.environment import environment_info
from cifarlab.io import atomic_write_json
from cifarlab.models import count_macs

Log = Callable[[str], None]

# Model -> (preset whose recipe it trains with, batch size). The batch sizes are each recipe's own.
DEFAULT_MODELS: dict[str, tuple[str, int]] = {"quick_cnn": ("quick", 256), "vgg_a": ("vgg_a", 128),
                                              "fast_net": ("fast", 1024)}


class PerImageCifar(Dataset):
    """The conventional per-image pipeline (torchvision-style transforms, written out: pad, crop, flip, scale)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, padding: int = 4) -> None:
        self.images, self.labels, self.padding = images, labels, padding
        self.mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
        self.std = torch.tensor(CIFAR10_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i].float().div_(255)  # ToTensor
        p = self.padding
        x = F.pad(x.unsqueeze(0), (p, p, p, p), mode="reflect").squeeze(0)  # RandomCrop(32, padding=4)
        top, left = torch.randint(0, 2 * p + 1, (2,)).tolist()
        x = x[:, top : top + 32, left : left + 32]
        if torch.rand(()) < 0.5:  # RandomHorizontalFlip
            x = x.flip(-1)
        return (x - self.mean) / self.std, self.labels[i]  # Normalize


def time_per_step(step: Callable[[], None], steps: int, warmup: int = 1) -> float:
    """Seconds per call of ``step`` over ``steps`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


@dataclass
class ModelBench:
    model: str
    batch: int
    macs: int
    bare: float  # images/s
    engine: float
    conventional: float
    epoch_fixed_ms: float = 0.0  # engine cost per epoch outside the step loop (shuffle, steps.csv)
    overhead: float = 0.0  # median over rounds of engine step time / bare step time - 1

    def row(self) -> dict[str, Any]:
        flops = 6 * self.macs  # per image and step: forward (2 MACs) + backward (2 x 2 MACs)
        return {"model": self.model, "batch": self.batch, "macs": self.macs, "bare_img_s": self.bare,
                "engine_img_s": self.engine, "conventional_img_s": self.conventional,
                "engine_overhead_pct": 100 * self.overhead,
                "engine_vs_conventional": self.engine / self.conventional,
                "engine_gflops": flops * self.engine / 1e9, "engine_epoch_fixed_ms": self.epoch_fixed_ms}


def bench_config(preset: str, batch: int, steps: int) -> Any:
    """The engine's run: ``preset``'s recipe on exactly steps x batch training images, one epoch = the timed steps."""
    return load_config(preset, overrides=[
        f"train.batch_size={batch}", "train.epochs=1", "data.val_size=0", f"data.subset={steps * batch}",
        "train.log_every=1000000", "data.test_subset=100", "train.device=cpu",
        # A one-epoch run cannot warm up for 2.3 epochs; the schedule costs one multiply per step whatever it is.
        "sched.name=constant", "sched.warmup_epochs=0"])


class ConventionalStep:
    """The conventional pipeline: same architecture, optimiser and loss; default (NCHW) memory format as in the
    reports' scripts; images made one by one in DataLoader worker processes. Call it for one step."""

    def __init__(self, preset: str, batch: int, data: CifarArrays, workers: int) -> None:
        from cifarlab.engine.build import build_model
        from cifarlab.engine.losses import build_loss
        from cifarlab.engine.optim import build_optimizer

        cfg = load_config(preset, overrides=["train.channels_last=false", "train.device=cpu"])
        self.net = build_model(cfg, torch.device("cpu"))
        self.opt, self.loss = build_optimizer(self.net, cfg.optim), build_loss(cfg.loss)
        self.loader = DataLoader(PerImageCifar(data.train_x, data.train_y), batch_size=batch, shuffle=True,
                                 drop_last=True, num_workers=workers)
        self.batches: Iterator | None = None

    def __call__(self) -> None:
        try:
            x, y = next(self.batches)
        except StopIteration:  # a small data set: start another epoch
            self.batches = iter(self.loader)
            x, y = next(self.batches)
        loss = self.loss(self.net(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def timed(self, steps: int) -> float:
        # A fresh iterator per round (its first batch, with the workers' start, is the warm-up step) and dropped
        # after it: idle workers must not prefetch while the other variants are timed.
        self.batches = iter(self.loader)
        seconds = time_per_step(self, steps)
        self.batches = None
        return seconds


def bench_model(name: str, preset: str, batch: int, data: CifarArrays, steps: int, rounds: int, workers: int,
                log: Log) -> ModelBench:
    from cifarlab.engine.trainer import Trainer

    cfg = bench_config(preset, batch, steps)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp) / "run", data=data, progress=False)
        trainer.setup()
        model, loss_fn = trainer.model, trainer.loss_fn
        x_fixed = trainer.augment.train(trainer.train_x[:batch], torch.Generator().manual_seed(0))
        y_fixed = trainer.train_y[:batch]

        def bare() -> None:  # the compute floor: same model, optimiser and loss on one pre-made batch
            loss = loss_fn(model(x_fixed), y_fixed)
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()

        conventional = ConventionalStep(preset, batch, data, workers)
        times: dict[str, list[float]] = {"bare": [], "engine": [], "conventional": []}
        epoch_fixed = math.inf
        for r in range(rounds):
            times["bare"].append(time_per_step(bare, steps))
            t0 = time.perf_counter()
            row = trainer.train_epoch(r)
            # Per step: the epoch's step loop (row["seconds"]); the rest of the call (shuffle, writing
            # steps.csv) is a per-epoch cost, reported apart: a real epoch has hundreds of steps, not a few.
            times["engine"].append(row["seconds"] / trainer.steps_per_epoch)
            epoch_fixed = min(epoch_fixed, time.perf_counter() - t0 - row["seconds"])
            times["conventional"].append(conventional.timed(steps))
        macs = count_macs(conventional.net)
    best = {k: min(v) for k, v in times.items()}
    # The overhead is a small difference of two noisy numbers: take it per round (both timed back to back,
    # under the same load) and keep the median, rather than a ratio of two bests from different rounds.
    overhead = statistics.median(e / b - 1 for e, b in zip(times["engine"], times["bare"]))
    result = ModelBench(name, batch, macs, *(batch / best[k] for k in ("bare", "engine", "conventional")),
                        epoch_fixed_ms=1000 * epoch_fixed, overhead=overhead)
    r = result.row()
    log(f"  {name:<10} batch {batch:>4}: bare {r['bare_img_s']:7.0f} img/s | engine {r['engine_img_s']:7.0f} img/s "
        f"(overhead {r['engine_overhead_pct']:+.1f} %) | conventional {r['conventional_img_s']:7.0f} img/s | "
        f"engine/conventional {r['engine_vs_conventional']:.2f}x | {r['engine_gflops']:.1f} GFLOP/s | "
        f"per-epoch cost {r['engine_epoch_fixed_ms']:.0f} ms")
    return result


def roofline(log: Log, repeats: int = 5) -> dict[str, float]:
    """Measured fp32 peaks of this machine: a large 3x3 convolution (forward) and a large matrix product."""
    x = torch.randn(64, 256, 16, 16).contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(256, 256, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    with torch.no_grad():
        t_conv = min(time_per_step(lambda: conv(x), 1) for _ in range(repeats))
        t_mm = min(time_per_step(lambda: a @ b, 1) for _ in range(repeats))
    conv_gflops = 2 * 64 * 256 * 256 * 9 * 16 * 16 / t_conv / 1e9
    mm_gflops = 2 * 2048**3 / t_mm / 1e9
    log(f"  roofline: 3x3 conv 256->256 @16x16 batch 64: {conv_gflops:.1f} GFLOP/s; 2048^2 matmul: "
        f"{mm_gflops:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
    return {"conv_gflops": conv_gflops, "matmul_gflops": mm_gflops, "threads": torch.get_num_threads()}


def time_to_accuracy(recipe: str, seeds: list[int], data: CifarArrays, out: Path, log: Log,
                     overrides: list[str] | None = None) -> dict[str, Any]:
    from cifarlab.engine.trainer import train

    runs = []
    for seed in seeds:
        cfg = load_config(recipe, overrides=[f"train.seed={seed}", *(overrides or [])])
        t0 = time.perf_counter()
        summary = train(cfg, out / f"{recipe}-seed{seed}", data=data, progress=None)
        wall = time.perf_counter() - t0
        runs.append({"seed": seed, "test_acc": summary["test_acc"], "wall_s": wall,
                     "train_s": summary.get("train_time_s"), "status": summary["status"]})
        log(f"  {recipe} seed {seed}: test {100 * summary['test_acc']:.2f} % in {wall:.0f} s "
            f"(training {summary.get('train_time_s', float('nan')):.0f} s)")
    accs = [r["test_acc"] for r in runs]
    walls = [r["wall_s"] for r in runs]
    result = {"recipe": recipe, "runs": runs, "test_acc_mean": statistics.mean(accs),
              "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
              "wall_s_mean": statistics.mean(walls), "wall_s_max": max(walls)}
    log(f"  {recipe}: {100 * result['test_acc_mean']:.2f} ± {100 * result['test_acc_std']:.2f} % test over "
        f"{len(runs)} seed(s), wall {result['wall_s_mean']:.0f} s mean, {result['wall_s_max']:.0f} s max")
    return result


def run_bench(data: CifarArrays, out: Path, models: list[str], steps: int = 5, rounds: int = 3, workers: int = 2,
              recipe: str | None = None, seeds: list[int] | None = None, log: Log = print,
              recipe_overrides: list[str] | None = None) -> dict[str, Any]:
    """Run the measurements; write ``out/bench.json`` atomically; return it."""
    from cifarlab.errors import ConfigError

    unknown = [m for m in models if m not in DEFAULT_MODELS]
    if unknown:
        raise ConfigError(f"bench: unknown model(s) {', '.join(unknown)}; valid: {', '.join(DEFAULT_MODELS)}")
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"environment": environment_info(torch.device("cpu")), "steps": steps,
                              "rounds": rounds, "workers": workers}
    log(f"cifarlab bench: torch {torch.__version__}, {torch.get_num_threads()} threads; best of {rounds} "
        f"interleaved rounds of {steps} steps; conventional pipeline with {workers} DataLoader workers")
    report["roofline"] = roofline(log)
    report["models"] = []
    for name in models:
        preset, batch = DEFAULT_MODELS[name]
        row = bench_model(name, preset, batch, data, steps, rounds, workers, log).row()
        row["pct_of_conv_peak"] = 100 * row["engine_gflops"] / report["roofline"]["conv_gflops"]
        report["models"].append(row)
        atomic_write_json(out / "bench.json", report)
    if recipe:
        report["time_to_accuracy"] = time_to_accuracy(recipe, seeds or [0], data, out / "runs", log,
                                                      recipe_overrides)
    atomic_write_json(out / "bench.json", report)
    log(f"written: {out / 'bench.json'}")
    return report


def format_table(report: dict[str, Any]) -> str:
    """The models' rows as a Markdown table (for docs/benchmarks.md)."""
    lines = ["| model | batch | bare img/s | engine img/s | overhead | conventional img/s | engine / conventional "
             "| GFLOP/s (of conv peak) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["models"]:
        lines.append(f"| {r['model']} | {r['batch']} | {r['bare_img_s']:.0f} | {r['engine_img_s']:.0f} | "
                     f"{r['engine_overhead_pct']:+.1f} % | {r['conventional_img_s']:.0f} | "
                     f"{r['engine_vs_conventional']:.2f}x | {r['engine_gflops']:.1f} ({r['pct_of_conv_peak']:.0f} %) |")
    return "\n".join(lines)


__all__ = ["DEFAULT_MODELS", "PerImageCifar", "format_table", "roofline", "run_bench", "time_per_step",
           "time_to_accuracy"]
