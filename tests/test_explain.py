"""`cifarlab explain`: filter-normalised directions, loss surfaces and interpolation (exact values, model left
untouched), Captum Grad-CAM on a toy model that must find a planted patch, confident mistakes, the end-to-end
run-directory outputs, `--compare`, one-line errors and the report section."""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.analysis.explain.attribution import attribute, mass_inside
from cifarlab.analysis.explain.compare import compare_runs
from cifarlab.analysis.explain.explain import explain_run
from cifarlab.analysis.explain.layers import default_target_layer, resolve_layer
from cifarlab.analysis.explain.mistakes import confident_mistakes, confusion_matrix, per_class_accuracy
from cifarlab.analysis.explain.runs import initial_state
from cifarlab.analysis.explain.settings import ExplainSettings
from cifarlab.analysis.explain.surface import (
    bn_stat_keys,
    coordinates,
    filter_normalized_direction,
    interpolate,
    interpolation_alphas,
    loss_grid,
    loss_line,
)
from cifarlab.commands.explain import add_explain_parser, cmd_explain
from cifarlab.engine.build import unwrap
from cifarlab.engine.trainer import Trainer, train
from cifarlab.errors import CheckpointError, CifarlabError, ConfigError
from cifarlab.models import create
from cifarlab.report.build import build_report
from synthetic import cfg_with, synthetic_cifar

SMALL = {"images": 4, "feature_images": 2, "mistakes": 6, "grid": 5, "line": 7, "batches": 2, "batch_size": 64,
         "interp_points": 5}


@contextlib.contextmanager
def one_thread():
    """Tiny models on a shared 2-core machine: a second intra-op thread only adds synchronisation."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    return synthetic_cifar(600, 200)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, data) -> Path:
    """Two tiny trained runs (quick_cnn with and without BatchNorm), one epoch each on synthetic data."""
    root = tmp_path_factory.mktemp("explain-lab")
    with one_thread():
        train(cfg_with("train.epochs=1"), root / "bn", data=data, progress=False)
        train(cfg_with("train.epochs=1", "model.options.norm=none"), root / "nobn", data=data, progress=False)
    return root


@pytest.fixture(scope="module")
def explained(lab, data) -> dict:
    with one_thread():
        return explain_run(lab / "bn", ExplainSettings(**SMALL), data=data)


def bn_model(seed: int = 0) -> nn.Module:
    """A tiny quick_cnn with BatchNorm whose running statistics are not the defaults (0 and 1)."""
    torch.manual_seed(seed)
    model = create("quick_cnn", widths=[8, 16, 16])
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32) * 2 + 0.5)
    return model.eval()


def batches(n: int = 2, size: int = 24, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 32, 32, generator=g), torch.randint(0, 10, (size,), generator=g)) for _ in range(n)]


def reference_loss(model: nn.Module, state: dict | None, bs: list) -> float:
    """Mean cross-entropy computed the plain way: a deep copy with ``state`` loaded, eval mode, model(x)."""
    m = copy.deepcopy(model)
    if state is not None:
        m.load_state_dict(state)
    m.eval()
    with torch.no_grad():
        total = sum(float(F.cross_entropy(m(x), y, reduction="sum")) for x, y in bs)
    return total / sum(len(y) for _, y in bs)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bit_identical(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k


# ---------------------------------------------------------------------------------------------------------------
# (1) filter-normalised directions


def filter_norms(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double().reshape(t.shape[0], -1).norm(dim=1)


@pytest.mark.parametrize("norm", ["batchnorm", "none"])
def test_filter_normalized_direction_matches_filter_norms(norm):
    torch.manual_seed(0)
    model = create("quick_cnn", widths=[8, 16, 16], norm=norm)
    d = filter_normalized_direction(model, torch.Generator().manual_seed(3))
    params = dict(model.named_parameters())
    assert set(d) == {k for k, v in model.state_dict().items() if v.is_floating_point()}
    moved = 0
    for name, p in params.items():
        if p.dim() >= 2:
            assert d[name].shape == p.shape
            assert torch.allclose(filter_norms(d[name]), filter_norms(p), rtol=1e-6, atol=0)
            assert not torch.allclose(d[name], p)  # random, not the weights themselves
            moved += 1
        else:  # biases, BN weight and bias
            assert torch.count_nonzero(d[name]) == 0, name
    assert moved == 4  # 3 convs + the linear layer
    for name in [*bn_stat_keys(model)[0], *bn_stat_keys(model)[1]]:
        assert torch.count_nonzero(d[name]) == 0, name
    if norm == "none":
        assert any(p.dim() == 1 for p in params.values())  # conv biases exist and were checked above
    again = filter_normalized_direction(model, torch.Generator().manual_seed(3))
    other = filter_normalized_direction(model, torch.Generator().manual_seed(4))
    assert all(torch.equal(d[k], again[k]) for k in d)
    assert not torch.equal(d["0.weight"], other["0.weight"])


def test_bn_stat_directions_only_with_the_option():
    model = bn_model()
    means, variances = bn_stat_keys(model)
    assert len(means) == len(variances) == 3
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0), include_bn_stats=True)
    state = model.state_dict()
    for name in means + variances:
        assert torch.count_nonzero(d[name]) == d[name].numel(), name
        assert torch.allclose(d[name].abs(), state[name].abs(), rtol=1e-6, atol=0)  # per-channel filter norm
    plain = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    # Same weight directions with or without the option: BN statistics are drawn after all weights.
    assert all(torch.equal(plain[k], d[k]) for k, p in model.named_parameters() if p.dim() >= 2)
    assert all(torch.count_nonzero(plain[k]) == 0 for k in means + variances)


def test_same_raw_directions_for_vgg_a_and_vgg_a_bn():
    """Weight shapes match in order, so the same seed gives the same raw draws: after dividing out each model's
    filter norms, the unit directions of corresponding layers are identical."""
    a, b = create("vgg_a", width_mult=0.125), create("vgg_a_bn", width_mult=0.125)
    da = filter_normalized_direction(a, torch.Generator().manual_seed(7))
    db = filter_normalized_direction(b, torch.Generator().manual_seed(7))
    wa = [(n, p) for n, p in a.named_parameters() if p.dim() >= 2]
    wb = [(n, p) for n, p in b.named_parameters() if p.dim() >= 2]
    assert [p.shape for _, p in wa] == [p.shape for _, p in wb]
    for (na, pa), (nb, pb) in zip(wa, wb):
        ua = da[na].double() / filter_norms(pa).view(-1, *[1] * (pa.dim() - 1))
        ub = db[nb].double() / filter_norms(pb).view(-1, *[1] * (pb.dim() - 1))
        assert torch.allclose(ua, ub, rtol=1e-5, atol=1e-7), (na, nb)


# ---------------------------------------------------------------------------------------------------------------
# (2) surfaces and (3) interpolation: exact values, model untouched


@pytest.mark.parametrize("with_stats", [False, True])
def test_surface_centre_is_the_model_loss_and_the_model_is_untouched(with_stats):
    model, bs = bn_model(), batches()
    before = snapshot(model)
    gen = torch.Generator().manual_seed(0)
    dx = filter_normalized_direction(model, gen, with_stats)
    dy = filter_normalized_direction(model, gen, with_stats)
    axis = coordinates(5, 1.0)
    assert axis[2] == 0.0 and axis[0] == -1.0 and axis[-1] == 1.0
    _, variances = bn_stat_keys(model)
    with one_thread():
        grid, acc = loss_grid(model, dx, dy, axis, axis, bs, variances, progress=False)
        line, _ = loss_line(model, dx, axis, bs, variances, progress=False)
    expected = reference_loss(model, None, bs)
    assert grid.shape == acc.shape == (5, 5)
    assert math.isclose(grid[2, 2], expected, rel_tol=1e-6)
    assert math.isclose(line[2], expected, rel_tol=1e-6)
    assert math.isclose(line[3], grid[2, 3], rel_tol=1e-6)  # the line is the grid's beta = 0 row
    # An off-centre point is the loss of the weights w + a dx + b dy, loaded the ordinary way.
    base = model.state_dict()
    shifted = {k: (v + 0.5 * dx[k] - 1.0 * dy[k]) if k in dx else v for k, v in base.items()}
    for k in variances:
        shifted[k] = shifted[k].clamp_min(0)
    assert math.isclose(grid[0, 3], reference_loss(model, shifted, bs), rel_tol=1e-5)
    assert grid.max() > expected + 0.05  # the directions really move the model
    assert_bit_identical(model, before)
    assert not model.training


def test_interpolation_endpoints_are_the_two_models():
    model, bs = bn_model(0), batches()
    start = snapshot(bn_model(1))
    model.train()  # the caller's mode is restored
    before = snapshot(model)
    alphas = interpolation_alphas(5)
    assert alphas.tolist() == [-0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
    with one_thread():
        losses, accs = interpolate(model, start, model.state_dict(), alphas, bs, progress=False)
    i0, i1 = list(alphas).index(0.0), list(alphas).index(1.0)
    assert math.isclose(losses[i0], reference_loss(model, start, bs), rel_tol=1e-6)
    assert math.isclose(losses[i1], reference_loss(model, None, bs), rel_tol=1e-6)
    assert losses[i0] != losses[i1]
    assert np.isfinite(losses).all()  # geometric interpolation keeps running variances positive outside [0, 1]
    assert ((accs >= 0) & (accs <= 1)).all()
    assert_bit_identical(model, before)
    assert model.training


def test_rebuilt_init_is_the_runs_real_init(tmp_path, data):
    cfg = cfg_with("train.seed=5")
    trainer = Trainer(cfg, tmp_path / "run", data=data, progress=False)
    trainer.setup()  # seeds and builds the model exactly as a run starts
    real = unwrap(trainer.model).state_dict()
    rng = torch.get_rng_state()
    rebuilt = initial_state(cfg, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is left alone
    assert all(torch.equal(rebuilt[k], real[k]) for k in real)


# ---------------------------------------------------------------------------------------------------------------
# (4) Grad-CAM on a toy model that can only solve its task by finding a planted patch

PATCH = 6


def patch_batch(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise images with one bright 6x6 patch at a random place; its colour (red/blue) is the class."""
    x = torch.randn(n, 3, 32, 32, generator=gen) * 0.5
    y = torch.randint(0, 2, (n,), generator=gen)
    pos = torch.randint(0, 32 - PATCH + 1, (n, 2), generator=gen)
    idx = torch.arange(32)
    rows = (idx >= pos[:, :1]) & (idx < pos[:, :1] + PATCH)
    cols = (idx >= pos[:, 1:]) & (idx < pos[:, 1:] + PATCH)
    mask = rows[:, :, None] & cols[:, None, :]
    colour = torch.tensor([[2.5, 0.0, 0.0], [0.0, 0.0, 2.5]])[y]
    return torch.where(mask[:, None], colour[:, :, None, None], x), y, mask


@pytest.fixture(scope="module")
def patch_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    with one_thread():
        for _ in range(200):
            x, y, _ = patch_batch(32, gen)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def test_gradcam_finds_the_planted_patch(patch_model):
    x, y, mask = patch_batch(32, torch.Generator().manual_seed(2))
    with torch.no_grad():
        pred = patch_model(x).argmax(1)
    assert (pred == y).float().mean() >= 0.95  # the toy task was learned
    assert default_target_layer(patch_model) == "4"  # the last ReLU at the last conv's 16x16 resolution
    with one_thread():
        maps = attribute(patch_model, x, pred, "gradcam")
    assert maps.shape == (32, 1, 32, 32)
    assert (maps >= 0).all() and (maps.flatten(1).sum(1) > 0).all()
    area = PATCH * PATCH / (32 * 32)
    inside = mass_inside(maps, mask)
    assert inside.mean() > 4 * area, (float(inside.mean()), area)  # measured: about 10x the area fraction
    assert (inside > area).float().mean() >= 0.9
    # An explicit layer gives the same maps; the other methods give non-negative maps of the same shape.
    with one_thread():
        assert torch.allclose(attribute(patch_model, x[:4], pred[:4], "gradcam", layer="4"), maps[:4])
        for method in ("saliency", "ig"):
            other = attribute(patch_model, x[:4], pred[:4], method, ig_steps=8)
            assert other.shape == (4, 1, 32, 32) and (other >= 0).all()
            assert mass_inside(other, mask[:4]).mean() > area


def test_unknown_or_unusable_layer_lists_the_valid_ones(patch_model):
    with pytest.raises(ConfigError) as err:
        resolve_layer(patch_model, "features.12")
    message = str(err.value)
    assert "unknown layer 'features.12'" in message and "0, 1, 2, 3, 4" in message and "\n" not in message
    with pytest.raises(ConfigError, match="layer '7' \\(Linear\\) outputs 1x2, not a feature map"):
        resolve_layer(patch_model, "7")


# ---------------------------------------------------------------------------------------------------------------
# (5) confident mistakes


def test_confident_mistakes_on_constructed_logits():
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    probs = torch.full((6, 10), 0.01)
    probs[0, 0] = 0.99  # right, very confident
    probs[1, 7] = 0.90  # wrong
    probs[2, 5] = 0.60  # wrong, less confident
    probs[3, 3] = 0.50  # right
    probs[4, 9] = 0.95  # wrong, most confident
    probs[5, 1] = 0.90  # wrong, ties with sample 1: the lower index first
    logits = probs.log()
    assert confident_mistakes(logits, labels, 3).tolist() == [4, 1, 5]
    assert confident_mistakes(logits, labels, 10).tolist() == [4, 1, 5, 2]
    assert confident_mistakes(logits, torch.tensor([0, 7, 5, 3, 9, 1]), 5).numel() == 0
    conf = confusion_matrix(logits.argmax(1), labels)
    assert conf.sum() == 6 and conf[1, 7] == 1 and conf[0, 0] == 1 and conf[4, 9] == 1
    acc = per_class_accuracy(conf)
    assert acc[0] == 1.0 and acc[1] == 0.0 and acc[3] == 1.0


def test_deep_filters_are_drawn_as_images(tmp_path):
    from cifarlab.analysis.explain.filters import deep_filter_tiles, plot_deep_filter_images
    from cifarlab.models import create

    w = torch.zeros(3, 4, 3, 3)
    w[0, 2] = torch.arange(9.0).reshape(3, 3) - 4  # filter 0 weighs input channel 2 most
    w[1, 0, 1, 1], w[2, 3, 0, 0] = -2.0, 0.5
    tiles = deep_filter_tiles(w)
    assert tiles.shape == (3, 3, 3)
    assert np.allclose(tiles[0], (np.arange(9.0).reshape(3, 3) - 4) / 4)
    assert tiles[1, 1, 1] == -1.0 and tiles[2, 0, 0] == 1.0
    info = plot_deep_filter_images(create("vgg_a", width_mult=0.125), tmp_path / "deep.png", max_layers=4)
    assert len(info["layers"]) == 4 and (tmp_path / "deep.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------------------------------
# (6) end to end on a trained run directory

EXPECTED = ["structure.png", "structure.md", "structure.csv", "filters_first_layer.png", "filters_deep.png",
            "filters_deep_images.png", "feature_maps.png", "attribution_gradcam.png", "attribution_gradcam.npz",
            "mistakes.png", "confusion.png", "surface_1d.png", "surface_1d.npz", "surface_2d_contour.png",
            "surface_2d_3d.png", "surface_2d.npz", "interpolation.png", "interpolation.npz", "explain.json"]


def test_explain_run_writes_everything_consistently(lab, explained):
    out = lab / "bn" / "explain"
    for name in EXPECTED:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files
    e = json.loads((out / "explain.json").read_text())
    assert e["timings_s"].keys() == {"structure", "filters", "gradcam", "mistakes", "surface", "interp"}
    run = json.loads((lab / "bn" / "summary.json").read_text())
    # The explained model and test split are the run's own: same predictions as the run's test evaluation.
    assert e["mistakes"]["confusion"] == run["confusion"]
    assert e["mistakes"]["test_acc"] == pytest.approx(run["test_acc"], abs=1e-12)
    assert len(e["mistakes"]["confident_mistakes"]) == min(6, round((1 - run["test_acc"]) * run["test_images"]))
    assert e["structure"]["params"] == run["params"]
    # One point, three routes: the surfaces' centre and the interpolation's end are the trained weights on the
    # same training batches.
    s2 = np.load(out / "surface_2d.npz")
    s1 = np.load(out / "surface_1d.npz")
    it = np.load(out / "interpolation.npz")
    assert s2["loss"].shape == (5, 5) and s1["loss"].shape == (7,) and s2["alphas"][2] == 0.0
    centre = e["surface"]["grid"]["loss_centre"]
    assert s2["loss"][2, 2] == centre == s1["loss"][3] == e["surface"]["line"]["loss_centre"]
    assert e["interp"]["loss_at_1"] == pytest.approx(centre, rel=1e-12)
    assert it["loss"][list(it["alphas"]).index(1.0)] == pytest.approx(centre, rel=1e-12)
    assert e["interp"]["loss_at_0"] > centre  # the trained weights beat their own initialisation
    assert e["surface"]["images"] == 128 and e["surface"]["grid"]["loss_max"] >= centre
    assert "train.seed=0" in e["interp"]["start"]
    cam = np.load(out / "attribution_gradcam.npz")
    assert cam["maps"].shape == (4, 1, 32, 32) and (cam["maps"] >= 0).all()
    assert e["gradcam"]["layer"] == "10"
    assert e["filters"]["first_layer"]["filters"] == 8


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cifarlab")
    add_explain_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["explain", *argv])


def test_cli_partial_rerun_keeps_other_parts(lab, explained, data, monkeypatch, capsys):
    monkeypatch.setattr("cifarlab.analysis.explain.runs.load_cifar10", lambda *a, **k: data)
    with one_thread():
        code = cmd_explain(parse(str(lab / "bn"), "--parts", "gradcam", "--method", "saliency", "--images", "3"))
    assert code == 0
    out = lab / "bn" / "explain"
    assert (out / "attribution_saliency.png").is_file()
    e = json.loads((out / "explain.json").read_text())
    assert e["gradcam"]["method"] == "saliency" and len(e["gradcam"]["images"]) == 3
    assert e["surface"]["grid"]["loss_centre"] == explained["surface"]["grid"]["loss_centre"]  # kept
    assert "gradcam" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "error", "fragments"),
    [
        (["RUN", "--layer", "nope", "--parts", "gradcam"], ConfigError, ["unknown layer 'nope'", "valid layers", "10"]),
        (["RUN", "--layer", "14"], ConfigError, ["layer '14' (Linear)", "not a feature map"]),
        (["RUN", "--parts", "filters,bogus"], ConfigError, ["unknown part 'bogus'", "structure,filters,gradcam"]),
        (["RUN", "--grid", "20"], ConfigError, ["--grid=20", "odd integer"]),
        (["RUN", "--feature-layers", "2,zz"], ConfigError, ["--feature-layers", "unknown layer 'zz'"]),
        (["RUN", "--interpolate", "no/such.pt", "--parts", "interp"], CheckpointError, ["'no/such.pt'", "init"]),
        (["no/such/run"], CheckpointError, ["run directory 'no/such/run' does not exist"]),
        (["EMPTY"], CheckpointError, ["has no last checkpoint"]),
        (["RUN", "--checkpoint", "best", "--out", "x"], ConfigError, ["--out is for --compare"]),
        ([], ConfigError, ["give either RUN_DIR or --compare"]),
    ],
)
def test_user_mistakes_give_one_clear_error(lab, tmp_path, argv, error, fragments):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.yaml").write_text("{}\n")
    names = {"RUN": str(lab / "bn"), "EMPTY": str(tmp_path / "empty")}
    with pytest.raises(error) as err:
        cmd_explain(parse(*[names.get(a, a) for a in argv]))
    message = str(err.value)
    assert isinstance(err.value, CifarlabError) and "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# ---------------------------------------------------------------------------------------------------------------
# (7) --compare, and the report


@pytest.fixture(scope="module")
def compared(lab, data, explained) -> dict:
    with one_thread():
        return compare_runs(lab / "bn", lab / "nobn", ExplainSettings(**SMALL), lab / "cmp", data=data)


def test_compare_shares_axes_and_scale(lab, compared, explained):
    out = lab / "cmp"
    for name in ("compare_1d.png", "compare_2d_contour.png", "compare_2d_3d.png", "compare_surfaces.npz",
                 "compare.json"):
        assert (out / name).is_file(), name
    z = np.load(out / "compare_surfaces.npz")
    c = json.loads((out / "compare.json").read_text())
    assert c == compared and c["kind"] == "cifarlab-explain-compare"
    assert c["same_direction_draws"] is True and "identical raw random directions" in c["directions"]
    assert z["grid_loss_a"].shape == z["grid_loss_b"].shape == (5, 5)
    values = np.concatenate([z[k].ravel() for k in ("grid_loss_a", "grid_loss_b", "line_loss_a", "line_loss_b")])
    lo, hi = float(np.nanmin(values)), float(min(np.nanmax(values), 10.0))
    assert c["display_range"] == pytest.approx([lo, hi]) and list(z["display_range"]) == pytest.approx([lo, hi])
    # Same settings and seed as the single-run explain: run A's centre is the same number.
    assert z["grid_loss_a"][2, 2] == pytest.approx(explained["surface"]["grid"]["loss_centre"], rel=1e-12)
    assert c["per_run"][0]["grid"]["loss_centre"] == pytest.approx(float(z["grid_loss_a"][2, 2]), rel=1e-12)
    assert c["per_run"][1]["grid"]["loss_centre"] == pytest.approx(float(z["grid_loss_b"][2, 2]), rel=1e-12)
    assert z["grid_loss_a"][2, 2] != z["grid_loss_b"][2, 2]


def test_report_shows_explain_figures_and_compare_section(lab, explained, compared):
    html_path, md_path = build_report(lab, lab / "report.html")
    html = html_path.read_text()
    for title in ("What the model learned (cifarlab explain)", "Structure of quick_cnn", "Network structure: bn",
                  "First-layer filters: bn", "Feature maps: bn", "Grad-CAM: bn", "Most confident mistakes: bn",
                  "Loss surface (2-D contour): bn", "Loss surface (3-D): bn", "Loss along a random direction (1-D): bn",
                  "Linear interpolation: bn",
                  "Loss surfaces compared: quick_cnn (bn) vs quick_cnn (nobn)", "2-D loss surfaces side by side"):
        assert title in html, title
    assert "Grad-CAM: nobn" not in html  # the run without an explain/ folder has no explain figures
    # explain's confusion matrix is the run's own here (same weights, no TTA): shown once, by the run section.
    run_summary = json.loads((lab / "bn" / "summary.json").read_text())
    assert explained["mistakes"]["confusion"] == run_summary["confusion"]
    assert "Confusion matrix and per-class accuracy of the explained weights: bn" not in html
    assert "Confusion matrix and per-class accuracy: run bn" in html
    md = md_path.read_text()
    assert "explain_surface_2d_contour.png" in md and "_compare_2d_contour.png" in md


@pytest.mark.parametrize(("name", "options", "layer"), [("quick_cnn", {}, "10"), ("vgg_a", {"width_mult": 0.125},
                                                         "features.11"), ("resnet18", {}, "post")])
def test_default_target_layer_per_architecture(name, options, layer):
    assert default_target_layer(create(name, **options)) == layer


def test_ema_run_is_explained_with_its_averaged_weights(tmp_path, data):
    with one_thread():
        run = train(cfg_with("train.epochs=1", "train.ema_decay=0.9"), tmp_path / "ema", data=data, progress=False)
        e = explain_run(tmp_path / "ema", ExplainSettings(parts=("mistakes",), mistakes=3), data=data)
    assert e["averaged"] is True
    assert e["mistakes"]["confusion"] == run["confusion"]  # the run tested its EMA weights; so does explain
    assert set(e["timings_s"]) == {"mistakes"} and not (tmp_path / "ema" / "explain" / "surface_2d.npz").exists()


def test_main_cli_prints_one_error_line(lab, capsys):
    from cifarlab.cli import main

    assert main(["explain", str(lab / "bn"), "--layer", "nope", "--parts", "gradcam"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("cifarlab: error: --layer: unknown layer 'nope'")


def test_every_explain_part_has_a_runner():
    from cifarlab.analysis.explain.explain import PART_RUNNERS
    from cifarlab.analysis.explain.settings import PARTS

    assert tuple(PART_RUNNERS) == PARTS


def test_explain_flags_are_generated_from_the_settings():
    import dataclasses

    from cifarlab.analysis.explain.settings import ExplainSettings
    from cifarlab.commands.explain import settings_from_args

    assert settings_from_args(parse("RUN")) == ExplainSettings()  # nothing given: every default
    s = settings_from_args(parse("RUN", "--parts", "gradcam,filters", "--grid", "5", "--include-bn-stats",
                                 "--feature-layers", "a, b", "--zmax", "3"))
    assert (s.parts, s.grid, s.include_bn_stats, s.feature_layers, s.zmax) == (("filters", "gradcam"), 5, True,
                                                                              ("a", "b"), 3.0)
    flags = {a for a in parse("RUN").__dict__}
    assert {f.name for f in dataclasses.fields(ExplainSettings)} <= flags  # one flag per setting
    with pytest.raises(ConfigError, match="--zmax=0"):
        settings_from_args(parse("RUN", "--zmax", "0"))
