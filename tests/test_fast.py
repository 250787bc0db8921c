"""The fast recipe's pieces: patch whitening, dirac init, frozen BN scale, alternating flips, bias groups, presets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.config import load_config
from cifarlab.data import BatchAugment, alternate_flip_mask, hflip
from cifarlab.engine.optim import param_groups
from cifarlab.engine.trainer import train
from cifarlab.errors import ConfigError
from cifarlab.models import count_params, create
from cifarlab.models.fast_net import FastNet, patch_whitening
from synthetic import cfg_with, synthetic_cifar


def correlated_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth, colour-correlated random images: neighbouring pixels and channels strongly correlated."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, 8, 8, generator=g)
    x = F.interpolate(base, size=32, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    return x + 0.3 * torch.randn(n, 3, 32, 32, generator=g)


def patch_covariance(out: torch.Tensor) -> torch.Tensor:
    flat = out.permute(1, 0, 2, 3).reshape(out.shape[1], -1).double()
    flat = flat - flat.mean(1, keepdim=True)
    return flat @ flat.T / (flat.shape[1] - 1)


def test_whitening_filters_whiten_the_patches() -> None:
    x = correlated_images()
    raw = torch.cov(F.unfold(x.double(), 2).transpose(1, 2).reshape(-1, 12).T)  # the patches: far from white
    assert (raw - torch.diag(raw.diagonal())).abs().max() > 0.5 * raw.diagonal().max()
    filters = patch_whitening(x, kernel=2, eps=1e-12)
    assert filters.shape == (24, 3, 2, 2)
    torch.testing.assert_close(filters[12:], -filters[:12])  # second half: the negatives (GELU keeps both signs)
    cov = patch_covariance(F.conv2d(x.double(), filters[:12].double()))
    torch.testing.assert_close(cov, torch.eye(12, dtype=torch.float64), atol=2e-3, rtol=0)
    # With the default eps, strong directions stay whitened (variance ~1), weak ones are damped, never blown up.
    cov_eps = patch_covariance(F.conv2d(x.double(), patch_whitening(x)[:12].double()))
    assert cov_eps.diagonal().max() <= 1.0 + 1e-6 and cov_eps.diagonal()[0] > 0.99
    off = cov_eps - torch.diag(cov_eps.diagonal())
    assert off.abs().max() < 2e-3


def test_fast_net_structure_init_and_frozen_parts() -> None:
    torch.manual_seed(0)
    net = create("fast_net")
    w = (64, 256, 256)
    expected = 24 * 3 * 4 + 24  # whitening 2x2 conv (+ bias)
    cin = 24
    for c in w:
        expected += c * cin * 9 + 2 * c + c * c * 9 + 2 * c  # conv, BN (weight+bias), conv, BN
        cin = c
    expected += 256 * 10  # head, no bias
    assert sum(p.numel() for p in net.parameters()) == expected == 1_972_792
    frozen = 24 * 3 * 4 + 2 * sum(w)  # whitening filters + BN scales
    assert count_params(net) == expected - frozen  # count_params counts what the optimiser trains
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert "whiten.weight" not in trainable and "whiten.bias" in trainable
    assert not any(n.endswith(("norm1.weight", "norm2.weight")) for n in trainable)  # BN scale frozen at 1
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in net.modules()
               if isinstance(m, nn.BatchNorm2d))
    # Dirac init: the first min(in, out) filters of each conv are the identity on their channel.
    conv = net.layers[1].conv2  # 256 -> 256
    eye = torch.zeros(256, 256, 3, 3)
    eye[torch.arange(256), torch.arange(256), 1, 1] = 1
    assert torch.equal(conv.weight, eye)
    first = net.layers[0].conv1  # 24 -> 64: 24 identity filters, 40 random ones
    assert torch.equal(first.weight[:24], eye[:24, :24]) and first.weight[24:].abs().sum() > 0
    # init_from_data sets the whitening filters from the images, bias zero; output shape (B, 10).
    x = correlated_images(32)
    net.init_from_data(x)
    torch.testing.assert_close(net.whiten.weight, patch_whitening(x))
    assert net(x[:4]).shape == (4, 10)
    with pytest.raises(ValueError, match="3 values"):
        FastNet(widths=(8, 16))


def test_ablation_options_switch_off_exactly_one_piece() -> None:
    w = (8, 16, 16)
    torch.manual_seed(0)
    recipe = create("fast_net", widths=w)
    torch.manual_seed(0)
    no_dirac = create("fast_net", widths=w, dirac=False)
    # Same random draws; dirac only overwrites the first min(in, out) filters of each conv with identities.
    conv, plain = recipe.layers[1].conv1, no_dirac.layers[1].conv1  # 8 -> 16 channels: 8 identity filters
    eye = torch.zeros(8, 8, 3, 3)
    eye[torch.arange(8), torch.arange(8), 1, 1] = 1
    assert torch.equal(conv.weight[:8], eye) and not torch.equal(plain.weight[:8], eye)
    assert torch.equal(conv.weight[8:], plain.weight[8:])
    # BN scales: frozen at 1 in the recipe, trained in the ablation (2 BN layers per group).
    trained_scales = create("fast_net", widths=w, frozen_bn_scale=False)
    assert count_params(trained_scales) - count_params(recipe) == 2 * sum(w)
    # Whitening stem: data-initialised and frozen in the recipe; "learned" keeps its init and trains it.
    learned = create("fast_net", widths=w, whiten="learned")
    assert count_params(learned) - count_params(recipe) == 24 * 3 * 4
    before = learned.whiten.weight.clone()
    learned.init_from_data(correlated_images(16))
    assert torch.equal(learned.whiten.weight, before)
    with pytest.raises(ConfigError, match="model 'fast_net': fast_net whiten must be one of data, learned, got 'pca'"):
        create("fast_net", widths=w, whiten="pca")


def test_ablation_sweep_changes_one_key_per_variant() -> None:
    from cifarlab.config import to_dict
    from cifarlab.experiments.sweep import expand, load_spec

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    for scale in ("quick", "cpu", "full"):
        plans = {p.rel_dir.split("/")[0]: flat(to_dict(p.cfg)) for p in expand(load_spec("fast_ablations", scale))}
        recipe = plans.pop("recipe")
        assert recipe["data.val_size"] == 5000 and recipe["train.tta"] == "flip_shift"
        for label, cfg in plans.items():
            changed = {k for k in recipe if cfg.get(k) != recipe[k]} | (cfg.keys() - recipe.keys())
            changed -= {"name"}  # the run name (the variant label)
            expected = {"bn_bias_lr_1x": 2}.get(label, 1)  # LR and decay multipliers go together
            assert len(changed) == expected, (label, changed)
    full = load_config("fast", overrides=["data.val_size=5000"])
    full_recipe = next(p for p in expand(load_spec("fast_ablations", "full")) if p.rel_dir == "recipe/seed0")
    assert to_dict(full_recipe.cfg)["model"] == to_dict(full)["model"]
    assert full_recipe.cfg.optim == full.optim and full_recipe.cfg.sched == full.sched


def test_alternating_flips_are_complementary_between_epochs() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1000, generator=g) < 0.5
    idx = torch.randperm(1000, generator=g)[:300]
    e0, e1, e2 = (alternate_flip_mask(base, idx, e) for e in range(3))
    assert torch.equal(e1, ~e0) and torch.equal(e2, e0)  # exactly the complementary images, every other epoch
    assert 100 < int(e0.sum()) < 200
    # BatchAugment mirrors exactly the given images (crop off: nothing random left).
    x = torch.randint(0, 256, (300, 3, 32, 32), generator=g, dtype=torch.uint8)
    aug = BatchAugment(crop_padding=0, flip=True, channels_last=False)
    out = aug.train(x, torch.Generator().manual_seed(1), e1)
    torch.testing.assert_close(out, aug.eval(hflip(x, e1)))


def test_trainer_alternates_flips_per_image(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    seen: list[tuple[int, torch.Tensor]] = []
    real = BatchAugment.train

    def spy(self, x, generator, flips=None):
        seen.append(flips.clone())
        return real(self, x, generator, flips)

    monkeypatch.setattr(BatchAugment, "train", spy)
    data = synthetic_cifar(300, 50)
    cfg = cfg_with("train.epochs=2", "augment.flip_mode=alternate", "train.batch_size=200", "data.val_size=100")
    orders = []
    real_randperm = torch.randperm

    def record_perm(*args, **kwargs):
        out = real_randperm(*args, **kwargs)
        if args and args[0] == 200:
            orders.append(out.clone())
        return out

    monkeypatch.setattr(torch, "randperm", record_perm)
    train(cfg, tmp_path / "run", data=data, progress=False)
    assert len(seen) == 2 and len(orders) == 2  # one step of 200 per epoch
    # Per image (undo each epoch's shuffle): epoch 2 mirrors exactly the images epoch 1 did not.
    flips = [torch.empty(200, dtype=torch.bool).index_put_((o,), f) for o, f in zip(orders, seen)]
    assert torch.equal(flips[1], ~flips[0])


def test_bias_group_lr_and_decay_multipliers() -> None:
    net = create("fast_net", widths=(8, 16, 16))
    cfg = load_config(overrides=["optim.lr=1.5", "optim.weight_decay=1e-3", "optim.bn_bias_lr_mult=64",
                                 "optim.bn_bias_wd_mult=0.015625"]).optim
    weights, biases = param_groups(net, cfg)
    assert biases["lr"] == 96.0 and biases["weight_decay"] == pytest.approx(1e-3 / 64)
    # Same absolute decay per step (lr x wd) in both groups, as airbench's decoupled-by-hand decay.
    assert biases["lr"] * biases["weight_decay"] == pytest.approx(1.5 * 1e-3)
    assert all(p.ndim > 1 for p in weights["params"]) and all(p.ndim == 1 for p in biases["params"])
    assert len(biases["params"]) == 1 + 6  # whitening bias + 6 BN shifts (BN scales are frozen, not optimised)


def test_fast_presets_resolve_and_a_tiny_fast_net_learns(tmp_path) -> None:
    fast, fast_cpu = load_config("fast"), load_config("fast-cpu")
    assert fast.model.name == fast_cpu.model.name == "fast_net" and fast.train.tta == "flip_shift"
    assert fast.augment.flip_mode == "alternate" and fast.data.val_size == 0 and fast.train.batch_size == 1024
    assert load_config("fast_cpu") == fast_cpu
    short = load_config("fast-cpu-10min")  # the same recipe at batch 256: per-example step size kept
    assert (short.train.batch_size, short.train.epochs) == (256, 6)
    assert short.optim.lr == pytest.approx(fast_cpu.optim.lr * 256 / 1024)
    assert short.sched.min_lr / short.optim.lr == pytest.approx(fast_cpu.sched.min_lr / fast_cpu.optim.lr)
    assert short.sched.warmup_epochs / 6 == pytest.approx(fast_cpu.sched.warmup_epochs / 8, abs=1e-3)
    # The recipe end to end at toy size: whitening init from data, alternating flips, TTA on the test set.
    data = synthetic_cifar(600, 200)
    cfg = load_config("fast-cpu", overrides=["model.options.widths=[8, 16, 16]", "train.batch_size=100",
                                             "train.epochs=4", "sched.warmup_epochs=1", "optim.lr=0.2",
                                             "data.val_size=100"])
    summary = train(cfg, tmp_path / "fast", data=data, progress=False)
    assert summary["status"] == "completed"
    assert summary["test_acc"] > 0.5  # chance is 0.1
    # TTA's contribution is read off the same weights: the no-TTA numbers are a single-view evaluation of them.
    from cifarlab.analysis.explain.runs import load_run
    from cifarlab.engine.evaluate import evaluate

    run = load_run(tmp_path / "fast")
    test_x, test_y = data.test_x, data.test_y
    single = evaluate(run.model, test_x, test_y, run.augment, nn.CrossEntropyLoss(), 50)
    assert summary["test_acc_no_tta"] == pytest.approx(single.acc)
    with_tta = evaluate(run.model, test_x, test_y, run.augment, nn.CrossEntropyLoss(), 50, tta="flip_shift")
    assert summary["test_acc"] == pytest.approx(with_tta.acc)
    assert 0.0 <= summary["val_acc_no_tta"] <= 1.0


def test_per_image_pipeline_makes_a_crop_flip_view_and_bench_reports_ratios(tmp_path) -> None:
    from cifarlab.experiments.bench import DEFAULT_MODELS, PerImageCifar, bench_config, format_table, run_bench

    for name, (preset, batch) in DEFAULT_MODELS.items():  # every model's bench config resolves
        cfg = bench_config(preset, batch, 3)
        assert (cfg.model.name, cfg.train.epochs, cfg.data.subset) == (name, 1, 3 * batch)

    data = synthetic_cifar(300, 100)
    ds = PerImageCifar(data.train_x, data.train_y)
    torch.manual_seed(0)
    x, y = ds[7]
    assert x.shape == (3, 32, 32) and y == data.train_y[7]
    # The view is one of the 9 x 9 crops of the reflect-padded image, maybe mirrored, then normalised.
    aug = BatchAugment(crop_padding=0, flip=False, channels_last=False)
    padded = F.pad(data.train_x[7:8].float(), (4, 4, 4, 4), mode="reflect").to(torch.uint8)
    views = [padded[..., i : i + 32, j : j + 32] for i in range(9) for j in range(9)]
    views += [v.flip(-1) for v in views]
    assert min(float((aug.eval(v)[0] - x).abs().max()) for v in views) < 1e-5
    # Two rounds: the engine trains one more epoch per round, past the bench run's single planned epoch.
    report = run_bench(data, tmp_path, ["quick_cnn"], steps=1, rounds=2, workers=0, log=lambda _: None)
    assert [(r["model"], r["amp"]) for r in report["models"]] == [("quick_cnn", "off"), ("quick_cnn", "bf16")]
    for row in report["models"]:  # fp32 and bf16 side by side, each against its own precision's conv peak
        assert row["batch"] == 256 and row["macs"] > 9_000_000
        for key in ("bare_img_s", "engine_img_s", "conventional_img_s", "engine_vs_conventional", "engine_gflops"):
            assert row[key] > 0 and row[key] == row[key], key
        assert row["engine_vs_conventional"] == pytest.approx(row["engine_img_s"] / row["conventional_img_s"])
    for key in ("conv_gflops", "conv_bf16_gflops", "matmul_gflops", "matmul_bf16_gflops"):
        assert report["roofline"][key] > 0, key
    from cifarlab.engine.environment import cpu_has_native_bf16

    # emulated bf16 (no bf16 in hardware) takes about a minute per 2048^2 product: the bench sizes it down
    assert report["roofline"]["matmul_size"] == (2048 if cpu_has_native_bf16() else 512)
    assert report["auto_amp"] in ("off", "bf16") and (tmp_path / "bench.json").is_file()
    table = format_table(report)
    assert "| quick_cnn | 256 | fp32 |" in table and "| quick_cnn | 256 | bf16 |" in table


def test_bench_cli_bad_input_is_one_line_error(capsys: pytest.CaptureFixture) -> None:
    from cifarlab.cli import main

    assert main(["bench", "--steps", "0"]) == 2
    assert "--steps and --rounds must be >= 1" in capsys.readouterr().err
    assert main(["bench", "--seeds", "a,b"]) == 2
    assert "--seeds must be comma-separated integers" in capsys.readouterr().err
    assert main(["bench", "--models", "quick_cnn,resnet9000"]) == 2
    assert "unknown model(s) resnet9000; valid: quick_cnn, vgg_a, fast_net" in capsys.readouterr().err
    assert main(["train", "--preset", "fast-gpu"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'fast-gpu'" in err and "fast_cpu" in err and "Traceback" not in err


def test_time_to_accuracy_reports_each_seed_and_mean_std(tmp_path) -> None:
    import statistics

    from cifarlab.experiments.bench import time_to_accuracy

    data = synthetic_cifar(300, 100)
    result = time_to_accuracy("quick", [0, 1], data, tmp_path, lambda _: None,
                              ["model.options.widths=[8, 16, 16]", "train.epochs=1", "data.val_size=100",
                               "train.batch_size=50"])
    accs = [r["test_acc"] for r in result["runs"]]
    assert [r["seed"] for r in result["runs"]] == [0, 1] and all(r["status"] == "completed" for r in result["runs"])
    assert result["test_acc_mean"] == pytest.approx(statistics.mean(accs))
    assert result["test_acc_std"] == pytest.approx(statistics.stdev(accs))
    assert all(r["train_s"] > 0 and r["wall_s"] >= r["train_tta_s"] > r["train_s"] for r in result["runs"])
    half = 12.706205 * statistics.stdev(accs) / 2**0.5  # t_0.975 with 1 degree of freedom
    low, high = result["test_acc_ci95"]
    assert low == pytest.approx(statistics.mean(accs) - half, abs=1e-6) and high == pytest.approx(
        statistics.mean(accs) + half, abs=1e-6)


def test_lookahead_alpha_ramps_cubically_and_syncs_with_it() -> None:
    from cifarlab.engine.optim import Lookahead

    w = nn.Parameter(torch.zeros(3))
    opt = Lookahead(torch.optim.SGD([w], lr=1.0), k=2, alpha=0.25, ramp_steps=8)
    assert [opt.alpha_at(s) for s in (0, 4, 8, 12)] == pytest.approx([1.0, 1 - 0.75 / 8, 0.25, 0.25])
    slow = torch.zeros(3)
    for step in range(1, 9):
        w.grad = torch.ones(3)  # each SGD step moves the fast weights by -1
        opt.step()
        fast = slow - (2 if step % 2 == 0 else 1)  # what plain SGD gives since the last sync
        if step % 2 == 0:  # sync: slow += alpha(step) (fast - slow); fast restarts from slow
            slow = slow + (1 - 0.75 * (step / 8) ** 3) * (fast - slow)
            torch.testing.assert_close(w.detach(), slow)
    assert float(w.detach()[0]) == pytest.approx(-(2 * (1 - 0.75 / 64) + 2 * (1 - 0.75 / 8) + 2 * (1 - 0.75 * 27 / 64)
                                           + 2 * 0.25))


def test_warmup_starts_at_the_given_fraction() -> None:
    from cifarlab.engine.schedules import LRSchedule

    net = nn.Linear(2, 2)
    cfg = load_config("fast", overrides=["train.epochs=10"])
    opt = torch.optim.SGD(net.parameters(), lr=cfg.optim.lr)
    sched = LRSchedule(opt, cfg.sched, 10, 100)
    assert sched.factor(0.0) == pytest.approx(0.2 + 0.8 * 0.01 / 2.3)  # the first step: 0.2 plus one step of rise
    assert sched.factor(1.15) == pytest.approx(0.2 + 0.8 * 1.16 / 2.3)
    assert sched.factor(2.3) == pytest.approx(1.0) and sched.factor(10) == pytest.approx(0.07)


def test_whitening_bias_airbench_treatment(tmp_path) -> None:
    cfg = load_config("fast").optim
    airbench = create("fast_net", widths=(8, 16, 16), whiten_bias_epochs=3)
    weights, biases = param_groups(airbench, cfg)
    assert any(p is airbench.whiten.bias for p in weights["params"])  # the weights' LR 1.5, not 64x
    assert not any(p is airbench.whiten.bias for p in biases["params"]) and len(biases["params"]) == 6
    measured = create("fast_net", widths=(8, 16, 16))  # None: fast-cpu's (measured) treatment
    assert any(p is measured.whiten.bias for p in param_groups(measured, cfg)[1]["params"])
    airbench.on_epoch_start(2)
    assert airbench.whiten.bias.requires_grad
    airbench.on_epoch_start(3)
    assert not airbench.whiten.bias.requires_grad
    # In the trainer: frozen from epoch 0 on, the bias never moves (init_from_data zeroes it); BN shifts do.
    data = synthetic_cifar(300, 50)
    for epochs_trained, moved in (("0", False), ("null", True)):
        run = tmp_path / f"wb{epochs_trained}"
        cfg_run = load_config("fast-cpu", overrides=["model.options.widths=[8, 16, 16]", "train.batch_size=100",
                                                     "train.epochs=2", "sched.warmup_epochs=1", "optim.lr=0.2",
                                                     "data.val_size=100", "train.tta=none",
                                                     f"model.options.whiten_bias_epochs={epochs_trained}"])
        train(cfg_run, run, data=data, progress=False)
        state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
        assert bool(state["whiten.bias"].abs().sum() > 0) is moved
        assert state["layers.0.norm1.bias"].abs().sum() > 0


def test_trainer_ramps_lookahead_over_the_whole_run(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import cifarlab.engine.build as build_module

    built = []
    real = build_module.build_optimizer

    def spy(model, cfg, total_steps=0):
        built.append(real(model, cfg, total_steps))
        return built[-1]

    monkeypatch.setattr(build_module, "build_optimizer", spy)
    cfg = cfg_with("train.epochs=3", "train.batch_size=100", "data.val_size=100", "optim.lookahead_k=5",
                   "optim.lookahead_ramp=true", "optim.lookahead_alpha=0.3")
    train(cfg, tmp_path / "la", data=synthetic_cifar(300, 50), progress=False)
    assert built[0].ramp_steps == 3 * 2 and built[0].steps == 6  # 200 training images / 100 per step, 3 epochs


def test_val_every_validates_every_nth_epoch_and_the_last(tmp_path) -> None:
    import csv
    import math

    from cifarlab.config import config_from_dict, to_dict

    cfg = cfg_with("train.epochs=3", "train.val_every=2", "train.batch_size=100", "data.val_size=100")
    summary = train(cfg, tmp_path / "ve", data=synthetic_cifar(300, 50), progress=False)
    with (tmp_path / "ve" / "epochs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["val_acc"] not in ("", "nan") for r in rows] == [False, True, True]
    assert summary["final_val_acc"] == pytest.approx(float(rows[-1]["val_acc"])) and summary["best_epoch"] in (2, 3)
    assert not math.isnan(summary["final_val_acc"])
    for bad in (["sched.name=plateau"], ["train.early_stopping.patience=2"]):
        with pytest.raises(ConfigError, match=r"'train\.val_every': got 2, expected 1 when sched\.name is plateau"):
            config_from_dict(to_dict(cfg_with("train.val_every=2", *bad)))
