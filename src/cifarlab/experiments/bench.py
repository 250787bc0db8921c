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
4. **Time to accuracy** (``--recipe fast_cpu``, opt-in: it trains): the recipe's wall time and final test
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
from cifarlab.engine.build import resolve_amp
from cifarlab.engine.environment import cpu_has_native_bf16, environment_info
from cifarlab.io import atomic_write_json
from cifarlab.models import count_macs
from cifarlab.stats import mean_ci

Log = Callable[[str], None]

# Model -> (preset whose recipe it trains with, batch size). The batch sizes are each recipe's own.
DEFAULT_MODELS: dict[str, tuple[str, int]] = {"quick_cnn": ("quick_cnn", 256), "vgg_a": ("vgg_a", 128),
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
    amp: str  # the precision of bare and engine: "off" (fp32) or "bf16" (autocast)
    bare: float  # images/s
    engine: float
    conventional: float  # fp32, NCHW: the reports' pipeline
    epoch_fixed_ms: float = 0.0  # engine cost per epoch outside the step loop (shuffle, steps.csv)
    overhead: float = 0.0  # median over rounds of engine step time / bare step time - 1

    def row(self) -> dict[str, Any]:
        flops = 6 * self.macs  # per image and step: forward (2 MACs) + backward (2 x 2 MACs)
        return {"model": self.model, "batch": self.batch, "macs": self.macs, "amp": self.amp,
                "bare_img_s": self.bare, "engine_img_s": self.engine, "conventional_img_s": self.conventional,
                "engine_overhead_pct": 100 * self.overhead,
                "engine_vs_conventional": self.engine / self.conventional,
                "engine_gflops": flops * self.engine / 1e9, "engine_epoch_fixed_ms": self.epoch_fixed_ms}


def bench_config(preset: str, batch: int, steps: int, amp: str = "off") -> Any:
    """The engine's run: ``preset``'s recipe on exactly steps x batch training images, one epoch = the timed steps."""
    return load_config(preset, overrides=[f"train.amp={amp}",
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


class EngineBench:
    """One precision of one model: its Trainer's real epoch and the bare step it is compared with."""

    def __init__(self, cfg: Any, tmp: Path, data: CifarArrays) -> None:
        from cifarlab.engine.trainer import Trainer

        self.trainer = t = Trainer(cfg, tmp / f"run-{cfg.train.amp}", data=data, progress=False)
        t.setup()
        self.x = t.augment.train(t.train_x[: cfg.train.batch_size], torch.Generator().manual_seed(0))
        self.y = t.train_y[: cfg.train.batch_size]
        self.times: dict[str, list[float]] = {"bare": [], "engine": []}
        self.epoch_fixed = math.inf

    def bare(self) -> None:  # the compute floor: same model, optimiser, loss and precision on one pre-made batch
        t = self.trainer
        with t.autocast():
            loss = t.loss_fn(t.model(self.x), self.y)
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t.optimizer.step()

    def round(self, r: int, steps: int) -> None:
        self.times["bare"].append(time_per_step(self.bare, steps))
        t0 = time.perf_counter()
        row = self.trainer.train_epoch(r)
        # Per step: the epoch's step loop (row["seconds"]); the rest of the call (shuffle, writing
        # steps.csv) is a per-epoch cost, reported apart: a real epoch has hundreds of steps, not a few.
        self.times["engine"].append(row["seconds"] / self.trainer.steps_per_epoch)
        self.epoch_fixed = min(self.epoch_fixed, time.perf_counter() - t0 - row["seconds"])


def bench_model(name: str, preset: str, batch: int, data: CifarArrays, steps: int, rounds: int, workers: int,
                log: Log, precisions: tuple[str, ...] = ("off", "bf16")) -> list[ModelBench]:
    """Rounds interleave every precision's bare and engine steps and the conventional pipeline's."""
    with tempfile.TemporaryDirectory() as tmp:
        benches = {amp: EngineBench(bench_config(preset, batch, steps, amp), Path(tmp), data) for amp in precisions}
        conventional = ConventionalStep(preset, batch, data, workers)
        conv_times = []
        for r in range(rounds):
            for bench in benches.values():
                bench.round(r, steps)
            conv_times.append(conventional.timed(steps))
        macs = count_macs(conventional.net)
    results = []
    for amp, b in benches.items():
        best = {k: min(v) for k, v in b.times.items()}
        # The overhead is a small difference of two noisy numbers: take it per round (both timed back to back,
        # under the same load) and keep the median, rather than a ratio of two bests from different rounds.
        overhead = statistics.median(e / x - 1 for e, x in zip(b.times["engine"], b.times["bare"]))
        results.append(ModelBench(name, batch, macs, amp, batch / best["bare"], batch / best["engine"],
                                  batch / min(conv_times), epoch_fixed_ms=1000 * b.epoch_fixed, overhead=overhead))
        r = results[-1].row()
        log(f"  {name:<10} batch {batch:>4} {PRECISION_NAMES[amp]}: bare {r['bare_img_s']:7.0f} img/s | engine "
            f"{r['engine_img_s']:7.0f} img/s (overhead {r['engine_overhead_pct']:+.1f} %) | conventional (fp32) "
            f"{r['conventional_img_s']:7.0f} img/s | engine/conventional {r['engine_vs_conventional']:.2f}x | "
            f"{r['engine_gflops']:.1f} GFLOP/s | per-epoch cost {r['engine_epoch_fixed_ms']:.0f} ms")
    if len(results) == 2:
        log(f"  {name:<10} bf16 / fp32 engine throughput: {results[1].engine / results[0].engine:.2f}x")
    return results


PRECISION_NAMES = {"off": "fp32", "bf16": "bf16"}


def roofline(log: Log, repeats: int = 5) -> dict[str, float]:
    """Measured peaks of this machine, fp32 and bf16 (autocast): a large 3x3 convolution (forward) and a large
    matrix product, rounds interleaved. Without bf16 in hardware the matrix is 512^2, not 2048^2: emulated bf16
    matmul is so slow there (about a minute for one 2048^2 product on an AVX2 CPU) that it would dominate."""
    x = torch.randn(64, 256, 16, 16).contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(256, 256, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
    n = 2048 if cpu_has_native_bf16() else 512
    a, b = torch.randn(n, n), torch.randn(n, n)
    times: dict[str, list[float]] = {k: [] for k in ("conv", "matmul", "conv_bf16", "matmul_bf16")}
    with torch.no_grad():
        for _ in range(repeats):
            for suffix, dtype in (("", None), ("_bf16", torch.bfloat16)):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
                    times["conv" + suffix].append(time_per_step(lambda: conv(x), 1))
                    times["matmul" + suffix].append(time_per_step(lambda: a @ b, 1))
    conv_flop, mm_flop = 2 * 64 * 256 * 256 * 9 * 16 * 16, 2 * n**3
    out = {f"{k}_gflops": (conv_flop if k.startswith("conv") else mm_flop) / min(v) / 1e9 for k, v in times.items()}
    log(f"  roofline ({torch.get_num_threads()} threads): 3x3 conv 256->256 @16x16 batch 64: fp32 "
        f"{out['conv_gflops']:.1f}, bf16 {out['conv_bf16_gflops']:.1f} GFLOP/s; {n}^2 matmul: fp32 "
        f"{out['matmul_gflops']:.1f}, bf16 {out['matmul_bf16_gflops']:.1f} GFLOP/s")
    return {**out, "threads": torch.get_num_threads(), "matmul_size": n}


def time_to_accuracy(recipe: str, seeds: list[int], data: CifarArrays, out: Path, log: Log,
                     overrides: list[str] | None = None) -> dict[str, Any]:
    """Train ``recipe`` once per seed: final test accuracy with mean, sample std and 95 % CI over seeds, and two
    times per run: end to end (what a user waits, data already in memory) and airbench's (training + test TTA)."""
    from cifarlab.engine.trainer import train

    runs = []
    for seed in seeds:
        cfg = load_config(recipe, overrides=[f"train.seed={seed}", *(overrides or [])])
        t0 = time.perf_counter()
        summary = train(cfg, out / f"{recipe}-seed{seed}", data=data, progress=None)
        wall = time.perf_counter() - t0
        train_tta = summary.get("train_time_s", math.nan) + summary.get("test_time_s", math.nan)
        runs.append({"seed": seed, "test_acc": summary["test_acc"], "wall_s": wall, "train_tta_s": train_tta,
                     "train_s": summary.get("train_time_s"), "status": summary["status"]})
        log(f"  {recipe} seed {seed}: test {100 * summary['test_acc']:.2f} % in {wall:.0f} s end to end "
            f"({train_tta:.0f} s training + test TTA)")
    mean, std, low, high, n = mean_ci([r["test_acc"] for r in runs])
    walls, fast = [r["wall_s"] for r in runs], [r["train_tta_s"] for r in runs]
    result = {"recipe": recipe, "runs": runs, "test_acc_mean": mean, "test_acc_std": std,
              "test_acc_ci95": [low, high], "wall_s_mean": statistics.mean(walls), "wall_s_max": max(walls),
              "train_tta_s_mean": statistics.mean(fast)}
    spread = f" ± {100 * std:.2f} (95 % CI {100 * low:.2f}-{100 * high:.2f})" if n > 1 else " (one seed: no spread)"
    log(f"  {recipe}: {100 * mean:.2f}{spread} % test over {n} seed(s); end to end {result['wall_s_mean']:.0f} s "
        f"mean, {result['wall_s_max']:.0f} s max; training + TTA {result['train_tta_s_mean']:.0f} s mean")
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
    auto = resolve_amp("auto", torch.device("cpu"))
    report["auto_amp"] = auto
    log(f"  CPU flags: {' '.join(report['environment']['cpu_flags']) or 'unknown'}; train.amp=auto picks "
        f"{PRECISION_NAMES[auto]} here ({'bf16 in hardware' if auto == 'bf16' else 'no bf16 in hardware'})")
    report["roofline"] = roofline(log)
    report["models"] = []
    for name in models:
        preset, batch = DEFAULT_MODELS[name]
        for result in bench_model(name, preset, batch, data, steps, rounds, workers, log):
            row = result.row()
            peak = report["roofline"]["conv_bf16_gflops" if result.amp == "bf16" else "conv_gflops"]
            row["pct_of_conv_peak"] = 100 * row["engine_gflops"] / peak
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
    lines = ["| model | batch | precision | bare img/s | engine img/s | overhead | conventional img/s (fp32) "
             "| engine / conventional | GFLOP/s (of that precision's conv peak) |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["models"]:
        lines.append(f"| {r['model']} | {r['batch']} | {PRECISION_NAMES[r['amp']]} | {r['bare_img_s']:.0f} | "
                     f"{r['engine_img_s']:.0f} | "
                     f"{r['engine_overhead_pct']:+.1f} % | {r['conventional_img_s']:.0f} | "
                     f"{r['engine_vs_conventional']:.2f}x | {r['engine_gflops']:.1f} ({r['pct_of_conv_peak']:.0f} %) |")
    return "\n".join(lines)


__all__ = ["DEFAULT_MODELS", "PerImageCifar", "format_table", "roofline", "run_bench", "time_per_step",
           "time_to_accuracy"]
