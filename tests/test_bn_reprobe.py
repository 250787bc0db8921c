"""CurvatureProbe leaves training bit-identical; saved probe points re-probe to the saved numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cifarlab.analysis.bn_study.callbacks import CurvatureProbe, Fig4Probe, point_path
from cifarlab.analysis.bn_study.probes import eta_grid
from cifarlab.analysis.bn_study.reprobe import reprobe_run
from cifarlab.analysis.bn_study.settings import load_settings
from cifarlab.analysis.bn_study.study import RunSpec, run_config
from cifarlab.config import to_dict
from cifarlab.data.synthetic import synthetic_cifar
from cifarlab.engine.callbacks import Callback
from cifarlab.engine.trainer import train
from cifarlab.errors import ConfigError
from cifarlab.io import atomic_write_yaml

TINY = ["data.synthetic=200", "width_mult=0.0625", "batch_size=32", "eval_batch_size=100"]
DATA = synthetic_cifar(200, 0)  # 160 training images after the 1/5 validation split: 5 steps per epoch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()  # many tiny double backwards: intra-op threads only add sync cost
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg(spec: RunSpec):
    return run_config(spec, load_settings("quick", overrides=TINY))


def _probes(save: bool = True, density_at: tuple[int, ...] = ()) -> list[Callback]:
    return [Fig4Probe(2, eta_grid(0.1, 3), save_points=save),
            CurvatureProbe(2, power_iters=20, trace_probes=3, density_at=density_at, density_steps=6,
                           save_points=save)]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_curvature_probe_leaves_training_bit_identical(tmp_path: Path) -> None:
    cfg = _cfg(RunSpec("vgg_a_bn", "sgd", 0.1, 4, momentum=0.9))
    plain = train(cfg, tmp_path / "plain", data=DATA, progress=False)
    probed = train(cfg, tmp_path / "probed", data=DATA, progress=False, callbacks=_probes(density_at=(1,)))
    assert (tmp_path / "plain" / "steps.csv").read_text() == (tmp_path / "probed" / "steps.csv").read_text()
    a, b = _weights(tmp_path / "plain"), _weights(tmp_path / "probed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert plain["test_acc"] == probed["test_acc"]
    curv = json.loads((tmp_path / "probed" / "curvature.json").read_text())
    assert [r["step"] for r in curv["rows"]] == [0, 1, 2] and curv["power_iters"] == 20
    assert {"lambda_max", "gHg_over_gg", "Hg_over_g", "trace", "trace_se", "lambda_converged", "seconds"} \
        <= curv["rows"][0].keys()
    dens = curv["rows"][1]
    assert len(dens["density_nodes"]) == 6 and sum(dens["density_weights"]) == pytest.approx(1, rel=1e-5)
    assert "density_nodes" not in curv["rows"][0] and probed["curvature_seconds"] > 0
    fig4 = json.loads((tmp_path / "probed" / "probes.json").read_text())
    assert {"rel_diffs", "loss_slopes", "beta_at_edge"} <= fig4["rows"][0].keys() and len(fig4["etas"]) == 3
    point = torch.load(point_path(tmp_path / "probed", 2), weights_only=True)
    assert point["step"] == 2 and point["indices"].shape == (32,) and "state" in point["optimizer"]
    assert sorted(p.name for p in (tmp_path / "probed" / "probe_points").iterdir()) == [
        "step_000000.pt", "step_000001.pt", "step_000002.pt"]


def test_reprobe_reproduces_saved_numbers(tmp_path: Path) -> None:
    cfg = _cfg(RunSpec("vgg_a_bn", "sgd", 0.1, 5, momentum=0.9))
    train(cfg, tmp_path / "r", data=DATA, progress=False, callbacks=_probes())
    results = reprobe_run(tmp_path / "r", data=DATA)
    assert [r["step"] for r in results] == [0, 2, 4]
    for r in results:
        fig4, curv = r["fig4"]["rel_diff"], r["curvature"]["rel_diff"]
        assert max(fig4["loss"], fig4["losses"], fig4["grad_diffs"], fig4["betas"]) < 1e-4, r
        assert curv["lambda_max"] < 1e-3, r
        assert r["max_rel_diff"] == max(r["fig4"]["max_rel_diff"], r["curvature"]["max_rel_diff"])
    # Not vacuous: a point whose weights moved re-probes to other numbers.
    path = point_path(tmp_path / "r", 2)
    point = torch.load(path, weights_only=True)
    point["model"] = {k: v * 1.01 if v.is_floating_point() else v for k, v in point["model"].items()}
    torch.save(point, path)
    moved = {r["step"]: r for r in reprobe_run(tmp_path / "r", data=DATA)}
    assert moved[2]["fig4"]["rel_diff"]["loss"] > 1e-4 and moved[0]["max_rel_diff"] < 1e-4


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, ctx) -> None:
        if ctx.step == self.step:
            raise KeyboardInterrupt


def test_resume_keeps_saved_points(tmp_path: Path) -> None:
    """Interrupted mid-epoch after saving step 6's point: the resumed run re-runs step 6 and keeps that file."""
    cfg = _cfg(RunSpec("vgg_a_bn", "sgd", 0.1, 9))
    probes = [Fig4Probe(3, eta_grid(0.1, 2), save_points=True)]
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "r", data=DATA, progress=False, callbacks=[*probes, StopAt(7)])
    first = point_path(tmp_path / "r", 6).stat().st_mtime_ns
    train(cfg, tmp_path / "r", resume=True, data=DATA, progress=False,
          callbacks=[Fig4Probe(3, eta_grid(0.1, 2), save_points=True)])
    assert point_path(tmp_path / "r", 6).stat().st_mtime_ns == first
    assert [r["step"] for r in reprobe_run(tmp_path / "r", data=DATA)] == [0, 3, 6]


def test_reprobe_refuses_an_augmented_run(tmp_path: Path) -> None:
    cfg = _cfg(RunSpec("vgg_a_bn", "sgd", 0.1, 4, augment=True))
    atomic_write_yaml(tmp_path / "config.yaml", to_dict(cfg))
    with pytest.raises(ConfigError, match=r"augment\.crop_padding, augment\.flip on"):
        reprobe_run(tmp_path, data=DATA)
