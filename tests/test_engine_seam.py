"""The engine's seams: callbacks (hooks, order, state through kill + resume), train.max_steps, and the one list
of resume-safe keys (``--resume --data-dir X`` uses X; a sweep whose data dir moved resumes its runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cifarlab import cli
from cifarlab.engine.callbacks import Callback, EpochEndFunction
from cifarlab.engine.trainer import train
from cifarlab.errors import CheckpointError
from synthetic import cfg_with, synthetic_cifar


@pytest.fixture(scope="module")
def data():
    return synthetic_cifar(600, 200)


class Counter(Callback):
    """Counts every hook; the counts are its state (so they must survive an interruption exactly)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.steps: list[int] = []

    def _hit(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def on_fit_start(self, trainer) -> None:
        self._hit("fit_start")

    def on_epoch_start(self, trainer, epoch) -> None:
        self._hit("epoch_start")

    def on_after_backward(self, trainer, ctx) -> None:
        assert all(p.grad is not None for p in trainer.raw_model.parameters() if p.requires_grad)
        assert ctx.step == trainer.step and len(ctx.indices) == len(ctx.y) == len(ctx.x)
        self._hit("after_backward")

    def on_step_end(self, trainer, ctx) -> None:
        self.steps.append(ctx.step)
        self._hit("step_end")

    def on_epoch_end(self, trainer, epoch, row) -> None:
        self._hit("epoch_end")

    def on_fit_end(self, trainer, summary) -> None:
        summary["counted_steps"] = len(self.steps)

    def state_dict(self) -> dict:
        return {"counts": dict(self.counts), "steps": list(self.steps)}

    def load_state_dict(self, state: dict) -> None:
        self.counts, self.steps = dict(state["counts"]), list(state["steps"])


def test_callback_hooks_and_state_survive_kill_and_resume(tmp_path: Path, data) -> None:
    cfg = cfg_with("train.epochs=3")  # 500 training images / 50 = 10 steps per epoch
    whole = Counter()
    summary = train(cfg, tmp_path / "whole", data=data, progress=False, callbacks=[whole])
    assert whole.steps == list(range(30)) and summary["counted_steps"] == 30
    assert whole.counts == {"fit_start": 1, "epoch_start": 3, "after_backward": 30, "step_end": 30, "epoch_end": 3}

    def stop(epoch: int, row: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", data=data, progress=False, callbacks=[Counter(), EpochEndFunction(stop)])
    resumed = Counter()
    again = train(cfg, tmp_path / "cut", resume=True, data=data, progress=False, callbacks=[resumed])
    assert resumed.steps == whole.steps  # the state of the first 2 epochs came back from the checkpoint
    assert resumed.counts["step_end"] == 30 and resumed.counts["fit_start"] == 2  # fit started twice
    assert again["test_acc"] == summary["test_acc"]
    assert (tmp_path / "cut" / "steps.csv").read_text() == (tmp_path / "whole" / "steps.csv").read_text()


def test_a_callback_can_stop_the_run(tmp_path: Path, data) -> None:
    class StopAfterOne(Callback):
        def on_epoch_end(self, trainer, epoch, row) -> None:
            trainer.status = "early_stopped"

    summary = train(cfg_with("train.epochs=4"), tmp_path / "r", data=data, progress=False,
                    callbacks=[StopAfterOne()])
    assert summary["status"] == "early_stopped" and summary["epochs_run"] == 1 and summary["test_acc"] > 0


def test_duplicate_callback_keys_are_refused(tmp_path: Path, data) -> None:
    with pytest.raises(ValueError, match="unique"):
        train(cfg_with(), tmp_path / "r", data=data, progress=False, callbacks=[Counter(), Counter()])


def test_max_steps_ends_mid_epoch_and_resumes(tmp_path: Path, data) -> None:
    cfg = cfg_with("train.max_steps=25", "train.epochs=1")  # 10 steps per epoch: 3 epochs, the last one partial
    summary = train(cfg, tmp_path / "r", data=data, progress=False)
    assert summary["steps"] == 25 and summary["epochs_run"] == 3 and summary["epochs_planned"] == 3
    rows = (tmp_path / "r" / "steps.csv").read_text().splitlines()
    assert len(rows) == 1 + 25 and rows[-1].split(",")[:2] == ["25", "3"]
    again = train(cfg, tmp_path / "r", resume=True, data=data, progress=False)
    assert again == summary  # finished: its summary, the test set not evaluated again
    more = train(cfg_with("train.max_steps=32", "train.epochs=1"), tmp_path / "r", resume=True, data=data,
                 progress=False)
    assert more["steps"] == 32 and more["epochs_run"] == 4  # raised max_steps: the run continues


def test_resuming_a_finished_run_with_another_config_names_the_keys(tmp_path: Path, data) -> None:
    train(cfg_with("train.epochs=1"), tmp_path / "r", data=data, progress=False)
    with pytest.raises(CheckpointError, match=r"differs in optim\.lr"):
        train(cfg_with("train.epochs=1", "optim.lr=0.3"), tmp_path / "r", resume=True, data=data, progress=False)


def test_cli_resume_uses_the_new_data_dir(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    import cifarlab.engine.build as build_module

    seen: list[str] = []

    def fake_load(path, **kwargs):
        seen.append(str(path))
        return data

    monkeypatch.setattr(build_module, "load_cifar10", fake_load)
    first, moved = tmp_path / "old-data", tmp_path / "moved-data"
    tiny = ["model.options.widths=[8,16,16]", "data.val_size=100", "train.batch_size=50", "train.device=cpu"]
    assert cli.main(["train", *tiny, "train.epochs=1", "--data-dir", str(first), "--out", str(tmp_path),
                     "--name", "r", "--quiet"]) == 0
    assert cli.main(["train", "--resume", str(tmp_path / "r"), "--epochs", "2", "--data-dir", str(moved),
                     "--quiet"]) == 0
    assert seen == [str(first.resolve()), str(moved.resolve())]
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["data"]["dir"] == str(moved.resolve())
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["epochs_run"] == 2
    assert cli.main(["train", "--resume", str(tmp_path / "r"), "--seed", "3", "--quiet"]) == 2


def test_a_relative_data_dir_is_stored_absolute(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    import cifarlab.engine.build as build_module

    monkeypatch.setattr(build_module, "load_cifar10", lambda *a, **k: data)
    monkeypatch.chdir(tmp_path)
    tiny = ["model.options.widths=[8,16,16]", "data.val_size=100", "train.batch_size=50", "train.device=cpu"]
    assert cli.main(["train", *tiny, "train.epochs=1", "--data-dir", "rel/data", "--name", "r", "--quiet"]) == 0
    stored = yaml.safe_load((tmp_path / "runs" / "r" / "config.yaml").read_text())["data"]["dir"]
    assert stored == str(tmp_path / "rel" / "data")


def test_sweep_whose_data_dir_moved_resumes_its_runs(tmp_path: Path, data) -> None:
    from cifarlab.experiments.sweep import parse_spec, run_sweep

    def spec(data_dir: str):
        return parse_spec({"name": "moved", "base": {"model": {"name": "quick_cnn", "options": {"widths": [8, 8, 8]}},
                                                     "data": {"val_size": 100, "dir": data_dir},
                                                     "train": {"batch_size": 50, "epochs": 2}},
                           "axes": {"optim.lr": [0.05]}, "seeds": [0]})

    def stop(plan, epoch, row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec("/data/before"), tmp_path, data=data, on_epoch_end=stop)
    result = run_sweep(spec("/data/after"), tmp_path, data=data)
    assert [r["status"] for r in result.runs] == ["completed"]
