"""Side-by-side throughput of one training step, measured in one process (these machines are noisy).
(`cifarlab bench` measures the same and more, through the real trainer; this script is the issue-2 record.)

Compares, for one model and batch size:
  bare       forward + backward + SGD step on a pre-made float batch (the compute floor)
  engine     what cifarlab's trainer does per step: gather a uint8 batch from the in-memory dataset,
             augment on the device (crop + flip), normalise, forward, backward, step
  contiguous the engine step without channels_last
and the decoded-cache reload time of the full dataset.

    python benchmarks/engine_throughput.py --data-dir ../shared/datasets [--model quick_cnn] [--batch 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch import nn

from cifarlab.data import BatchAugment, load_cifar10
from cifarlab.experiments.bench import time_per_step
from cifarlab.models import create


def time_steps(step, n_warmup: int = 3, n_timed: int = 10) -> float:
    return time_per_step(step, n_timed, warmup=n_warmup)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", default="quick_cnn")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each is kept")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as cache:
        load_cifar10(args.data_dir, download=False, cache_dir=cache)  # decode + write cache
        t = time.perf_counter()
        data = load_cifar10(args.data_dir, download=False, cache_dir=cache)
        reload_s = time.perf_counter() - t
    print(f"cache reload of 60,000 images: {reload_s:.2f} s")

    bs = args.batch
    gen = torch.Generator().manual_seed(0)
    results: dict[str, list[float]] = {"bare": [], "engine": [], "engine, contiguous": []}

    def make(channels_last: bool):
        model = create(args.model)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        return model, opt, BatchAugment(channels_last=channels_last)

    model, opt, aug = make(True)
    model_c, opt_c, aug_c = make(False)
    x_fixed = aug.train(data.train_x[:bs], gen)
    y_fixed = data.train_y[:bs]
    loss_fn = nn.CrossEntropyLoss()

    def bare():
        loss = loss_fn(model(x_fixed), y_fixed)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def engine_step(m, o, a):
        def step():
            idx = torch.randint(0, len(data.train_x), (bs,), generator=gen)
            x = a.train(data.train_x[idx], gen)
            loss = loss_fn(m(x), data.train_y[idx])
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()
        return step

    for _ in range(args.rounds):  # interleave so drifts in machine load hit all variants alike
        results["bare"].append(time_steps(bare))
        results["engine"].append(time_steps(engine_step(model, opt, aug)))
        results["engine, contiguous"].append(time_steps(engine_step(model_c, opt_c, aug_c)))

    t_aug = time_steps(lambda: aug.train(data.train_x[:bs], gen), n_timed=20)
    best = {k: min(v) for k, v in results.items()}
    print(f"model {args.model}, batch {bs}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, sec in best.items():
        print(f"  {name:<20} {bs / sec:8.0f} images/s   ({sec / best['bare']:.3f}x the bare step time)")
    print(f"  augmentation alone   {bs / t_aug:8.0f} images/s")
    print(f"engine overhead over bare compute: {100 * (best['engine'] / best['bare'] - 1):.1f} %")
    print(f"channels_last speed-up: {best['engine, contiguous'] / best['engine']:.2f}x")


if __name__ == "__main__":
    main()
