"""The bn-study driver: settings validation, CLI hook, a tiny end-to-end run, resumability, unchanged trajectory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from cifarlab.analysis.bn_study.findings import read_findings
from cifarlab.analysis.bn_study.interpret import summarize, to_markdown
from cifarlab.analysis.bn_study.settings import load_settings
from cifarlab.analysis.bn_study.study import RunSpec, Study, run_config, spec_callbacks
from cifarlab.commands.bn_study import add_bn_study_parser, cmd_bn_study
from cifarlab.engine.callbacks import EpochEndFunction
from cifarlab.engine.rundir import load_run_config
from cifarlab.engine.trainer import train
from cifarlab.errors import ConfigError

TINY = ["data.synthetic=200", "width_mult=0.0625", "batch_size=32", "eval_batch_size=100", "train.steps=5",
        "train.lrs=[0.1]", "band.steps=4", "band.lrs=[0.001,0.0001]", "landscape.steps=4", "landscape.probe_every=2",
        "landscape.eta_count=3", "ics.every=2", "ics.layers=[2,5]", "noisy.steps=5", "seeds=[0]", "threads=0",
        "curvature.every=2", "curvature.power_iters=100", "curvature.trace_probes=2", "noisy.activation_every=2",
        "noisy.strengths=[1.0]"]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cifarlab")
    add_bn_study_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bn-study", *argv])


def test_settings_scales_and_errors(tmp_path: Path) -> None:
    quick, paper = load_settings("quick"), load_settings("paper")
    assert quick.width_mult < 1 and paper.width_mult == 1.0
    assert paper.landscape.steps == 15000 and paper.data.subset is None and paper.train.lrs == [0.1, 0.5]
    assert quick.band.lrs == [1e-3, 2e-3, 1e-4, 5e-4] and quick.band.optimizer == "adam"
    with pytest.raises(ConfigError, match=r"unknown config key 'landscape\.eta_cnt'"):
        load_settings("quick", overrides=["landscape.eta_cnt=3"])
    with pytest.raises(ConfigError, match=r"landscape\.eta_low"):
        load_settings("quick", overrides=["landscape.eta_low=5"])
    with pytest.raises(ConfigError, match="parts"):
        load_settings("quick", extra={"parts": ["train", "nope"]})
    with pytest.raises(ConfigError, match=r"ics\.layers"):
        load_settings("quick", overrides=["ics.layers=[1]"])
    with pytest.raises(ConfigError, match="scale"):
        load_settings("huge")
    cfg = tmp_path / "s.yaml"
    cfg.write_text("band: {steps: 7}\nlandscape: {lr: 0.05}\n")
    s = load_settings("quick", files=[str(cfg)], overrides=["band.steps=9"])
    assert (s.band.steps, s.landscape.lr) == (9, 0.05)


def test_cli_bad_part_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        cmd_bn_study(parse(["--out", str(tmp_path), "--parts", "train,bogus"]))
    with pytest.raises(SystemExit):  # argparse refuses an empty list itself (exit 2, one error line)
        cmd_bn_study(parse(["--out", str(tmp_path), "--parts", ","]))


def _tiny(*extra: str):
    s = load_settings("quick", overrides=[*TINY, *extra])
    return s, Study(s, Path("."), log=lambda _: None)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_trajectory_unchanged_by_probe_and_ics_callbacks(tmp_path: Path) -> None:
    s, study = _tiny()
    plain = RunSpec("vgg_a_bn", "sgd", 0.1, 4)
    probed = RunSpec("vgg_a_bn", "sgd", 0.1, 4, probe_every=1, etas=(0.05, 0.4), ics_every=2, ics_layers=(2, 3))
    runs = {}
    for spec in (plain, probed):
        runs[spec] = train(run_config(spec, s), tmp_path / spec.name, data=study.data(), progress=False,
                           callbacks=spec_callbacks(spec))
    probes = json.loads((tmp_path / probed.name / "probes.json").read_text())["rows"]
    ics = json.loads((tmp_path / probed.name / "ics.json").read_text())["rows"]
    assert [p["step"] for p in probes] == [0, 1, 2, 3] and [r["step"] for r in ics] == [0, 0, 2, 2]
    assert (tmp_path / plain.name / "steps.csv").read_text() == (tmp_path / probed.name / "steps.csv").read_text()
    a, b = _weights(tmp_path / plain.name), _weights(tmp_path / probed.name)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert runs[plain]["test_acc"] == runs[probed]["test_acc"]


def test_tiny_end_to_end_produces_every_file_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "study"
    assert cmd_bn_study(parse(["--out", str(out), "--device", "cpu", *TINY])) == 0
    expected = ["settings.yaml", "env.json", "summary.md", "summary.json", "findings.json", "manifest.json",
                "train/curves.png", "train/steps.csv", "train/epochs.csv", "train/final.csv", "train/done.json",
                "band/band.png", "band/band.csv", "band/losses.csv", "band/done.json",
                "landscape/landscape.png", "landscape/probes.csv", "landscape/probes_eta.csv", "landscape/done.json",
                "landscape/beta_eta.png", "landscape/curvature.png", "landscape/curvature.csv",
                "ics/ics.png", "ics/ics.csv", "ics/done.json",
                "noisy/curves.png", "noisy/epochs.csv", "noisy/final.csv", "noisy/done.json", "noisy/activations.png"]
    for name in expected:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    for key in ("band_width", "pred", "pred_rel", "beta", "lambda_max", "trace", "ics_rel", "lr0.1:test_acc",
                "lr0.1:test_acc_clean_stats"):
        assert key in summary["arms"]["vgg_a"] and key in summary["arms"]["vgg_a_bn"], key
    assert "noisy:test_acc_clean_stats" in summary["arms"]["vgg_a_noisy_bn@0.5"]
    # One seed: every claim is measured and stays inconclusive (no CI from one run), in findings.json too.
    found = read_findings(out / "findings.json")["findings"]
    assert len(found) >= 10 and {f["verdict"] for f in found} == {"inconclusive"}
    assert any("beta-smoothness" in line and line.endswith("inconclusive") for line in summary["interpretation"])
    # The band CSV is the per-step min/max over the LR runs of losses.csv, per model and seed.
    band = (out / "band" / "band.csv").read_text().splitlines()
    assert band[0].split(",") == ["model", "seed", "step", "min", "max"] and len(band) == 1 + 2 * 4
    # Second invocation: every part is complete, nothing is trained again.
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    assert cmd_bn_study(parse(["--out", str(out), "--device", "cpu", *TINY])) == 0
    log = capsys.readouterr().out
    assert ": training\n" not in log and log.count("complete, loading results") == 5
    assert before == {p: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    # Changing one part's settings re-runs only that part.
    assert cmd_bn_study(parse(["--out", str(out), "--device", "cpu", "--parts", "band", "--quiet", *TINY,
                               "band.lrs=[0.001,0.0005]"])) == 0
    assert "bn-study summary" in capsys.readouterr().out
    # ... and the summary still holds the other (complete) parts.
    summary = json.loads((out / "summary.json").read_text())
    assert "beta" in summary["arms"]["vgg_a_bn"] and "vgg_a_noisy_bn@0.5" in summary["arms"]
    # The report shows the study as one section: its two tables and five figures, no bogus "run" sections.
    from cifarlab.report.build import build_report, report_counts

    html_path, md_path = build_report(tmp_path)
    html = html_path.read_text()
    assert "BatchNorm study" in html and "Findings, generated from the numbers" in html
    # Tables: findings, per model, trained runs per arm; figures: the 8 of the manifest, nothing of the runs.
    assert report_counts(html) == {"tables": 3, "figures": 8, "data_images": 8}
    assert "Run study" not in html and "Santurkar et al. Fig. 4" in md_path.read_text()


def test_verdicts_follow_the_numbers_and_their_spread() -> None:
    """A clear effect over 5 seeds is 'supported', the reverse 'contradicted', noise 'inconclusive'."""
    s = load_settings("quick")

    def fake(model: str, seed: int, beta: float) -> dict:
        return {"spec": {"model": model, "lr": 0.1, "seed": seed}, "status": "completed", "step_loss": [1.0],
                "probes": [{"loss": 1.0, "losses": [1.0, 2.0], "grad_diffs": [1.0, 3.0], "betas": [beta, beta / 2]}]}

    def verdict(bn: list[float], std: list[float]) -> str:
        runs = [fake("vgg_a_bn", k, b) for k, b in enumerate(bn)] + [fake("vgg_a", k, b) for k, b in enumerate(std)]
        found = [f for f in summarize({"landscape": runs}, s)["findings"] if f["claim"].startswith("Fig. 4c")]
        return found[0]["verdict"]

    std = [40.0, 42.0, 38.0, 41.0, 39.0]
    assert verdict([10.0, 11.0, 9.5, 10.5, 10.2], std) == "supported"
    assert verdict([80.0, 82.0, 79.0, 81.0, 83.0], std) == "contradicted"
    assert verdict([41.0, 38.0, 40.5, 39.0, 42.0], std) == "inconclusive"
    assert verdict([10.0, 11.0], std[:2]) == "inconclusive"  # two seeds: no verdict however large the effect
    summary = summarize({"landscape": [fake("vgg_a", 0, 1.0), fake("vgg_a_bn", 0, 2.0)]}, s)
    assert "| VGG-A+BN |" in to_markdown(summary) and "inconclusive" in to_markdown(summary)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("spec", [
    RunSpec("vgg_a_bn", "sgd", 0.1, 20, momentum=0.9, probe_every=3, etas=(0.05, 0.4), ics_every=4,
            ics_layers=(2,)),
    RunSpec("vgg_a_noisy_bn", "adam", 1e-3, 20, augment=True, noise=(0.5, 1.25, 0.1, 0.1)),
], ids=["sgd-probes", "adam-noisy-augment"])
def test_interrupted_run_resumes_exactly(tmp_path: Path, spec: RunSpec) -> None:
    """Killed after epoch 2 and resumed: probes (callback state), curves, weights, BN statistics and the noise
    generators' state (noisy BN's extra state) continue exactly as in an uninterrupted run."""
    s, study = _tiny()
    cfg = run_config(spec, s)
    train(cfg, tmp_path / "whole", data=study.data(), progress=False, callbacks=spec_callbacks(spec))

    def stop_after_two(epoch: int, row: dict) -> None:
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):  # 160 training images / batch 32 = 5 steps per epoch: stopped at step 10
        train(cfg, tmp_path / "cut", data=study.data(), progress=False,
              callbacks=[*spec_callbacks(spec), EpochEndFunction(stop_after_two)])
    assert torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)["step"] == 10
    train(cfg, tmp_path / "cut", resume=True, data=study.data(), progress=False, callbacks=spec_callbacks(spec))
    for name in ("steps.csv", "probes.json", "ics.json"):
        whole, cut = tmp_path / "whole" / name, tmp_path / "cut" / name
        assert whole.is_file() == cut.is_file(), name
        if name == "steps.csv":
            assert whole.read_text() == cut.read_text()
        elif whole.is_file():
            assert json.loads(whole.read_text())["rows"] == json.loads(cut.read_text())["rows"], name
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all() if isinstance(a[k], torch.Tensor) else a[k].keys() == b[k].keys(), k
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("whole", "cut")]
    assert summaries[0]["test_acc"] == summaries[1]["test_acc"]


def test_study_resumes_a_run_interrupted_mid_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cifarlab.analysis.bn_study import study as study_mod

    s = load_settings("quick", overrides=[*TINY, "train.steps=15", "parts=[train]"])
    real = study_mod.spec_callbacks

    def stop(epoch: int, row: dict) -> None:  # the first training is stopped after its second epoch (Ctrl-C)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(study_mod, "spec_callbacks", lambda spec: [*real(spec), EpochEndFunction(stop)])
    with pytest.raises(KeyboardInterrupt):
        study_mod.run_study(s, tmp_path / "st", log=lambda _: None)
    monkeypatch.setattr(study_mod, "spec_callbacks", real)
    lines: list[str] = []
    study_mod.run_study(s, tmp_path / "st", log=lines.append)
    assert any("resuming from epoch 2" in line for line in lines)
    study_mod.run_study(s, tmp_path / "fresh", log=lambda _: None)
    # Same per-step curves and final accuracies as a study never interrupted.
    assert (tmp_path / "st" / "train" / "steps.csv").read_text() == (tmp_path / "fresh" / "train" /
                                                                    "steps.csv").read_text()
    assert (tmp_path / "st" / "train" / "final.csv").read_text().count("\n") >= 3
    read = {k: json.loads((tmp_path / k / "summary.json").read_text())["arms"] for k in ("st", "fresh")}
    for model in ("vgg_a", "vgg_a_bn"):
        assert read["st"][model]["lr0.1:test_acc"] == read["fresh"][model]["lr0.1:test_acc"]


def test_study_runs_are_ordinary_run_directories(tmp_path: Path) -> None:
    """A bn-study training is a normal run: `cifarlab eval` rebuilds it (noisy BN is a registered model)."""
    from cifarlab.engine.evaluate import evaluate_checkpoint

    s, study = _tiny()
    spec = RunSpec("vgg_a_noisy_bn", "sgd", 0.1, 6, noise=(0.5, 1.25, 0.1, 0.1))
    summary = train(run_config(spec, s), tmp_path / "r", data=study.data(), progress=False)
    cfg = load_run_config(tmp_path / "r")
    assert cfg.model.name == "vgg_a_noisy_bn" and cfg.train.max_steps == 6 and summary["steps"] == 6
    import cifarlab.engine.build as build_module

    original = build_module.load_cifar10
    build_module.load_cifar10 = lambda *a, **k: study.data()
    try:
        again = evaluate_checkpoint(tmp_path / "r", device="cpu")
    finally:
        build_module.load_cifar10 = original
    assert again["test_acc"] == summary["test_acc"] and again["model"] == "vgg_a_noisy_bn"


@pytest.mark.skipif(not __import__("cifarlab.experiments.executors", fromlist=["x"]).ray_available(),
                    reason="ray extra not installed")
def test_ray_executor_trains_the_runs_in_parallel_tasks(tmp_path: Path) -> None:
    from cifarlab.analysis.bn_study.study import run_study

    over = [*TINY, "parts=[train]", "train.lrs=[0.5]"]
    lines: list[str] = []
    ray_summary = run_study(load_settings("quick", overrides=[*over, "executor.kind=ray"]), tmp_path / "ray",
                            log=lines.append)
    assert any(line.startswith("[ray] 2 trainings as Ray tasks") for line in lines)
    assert sum(": training" in line for line in lines) == 0  # all trained by the tasks, none by the driver
    local = run_study(load_settings("quick", overrides=[*over, "executor.kind=local"]), tmp_path / "local",
                      log=lambda _: None)
    # Same runs, same numbers: the tasks run with 1 thread, the driver with torch's default, and the study's
    # NCHW runs do not depend on the thread count (channels_last ones did).
    for model in ("vgg_a", "vgg_a_bn"):
        assert ray_summary["arms"][model]["lr0.5:test_acc"] == local["arms"][model]["lr0.5:test_acc"]
    ray_steps = (tmp_path / "ray" / "train" / "steps.csv").read_text()
    assert ray_steps == (tmp_path / "local" / "train" / "steps.csv").read_text()
    assert len(ray_steps.splitlines()) == 1 + 2 * 5
    assert sorted(p.name for p in (tmp_path / "ray" / "runs").iterdir()) == sorted(
        p.name for p in (tmp_path / "local" / "runs").iterdir())
