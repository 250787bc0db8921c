"""Rows of the hardening battery (issue 16), each reproduced through ``cifarlab.cli.main``: exit code, one line
on stderr, no traceback, nothing left behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cifarlab import cli
from cifarlab.config import load_config
from cifarlab.engine.rundir import RunLock
from cifarlab.engine.trainer import Trainer, train
from cifarlab.errors import CheckpointError, ConfigError
from synthetic import cfg_with, synthetic_cifar

TINY = ["model.options.widths=[8,16,16]", "data.val_size=100", "train.batch_size=50", "train.device=cpu",
        "train.epochs=1"]


@pytest.fixture
def fake_data(monkeypatch: pytest.MonkeyPatch):
    import cifarlab.engine.build as build_module

    data = synthetic_cifar(300, 100)
    monkeypatch.setattr(build_module, "load_cifar10", lambda *a, **k: data)
    return data


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    return code, err


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("cifarlab: error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv, expected", [
    (["train.device=cpu:abc"], "expected auto, cpu, cuda, cuda:N or mps"),  # row 3
    (["--seed", "99999999999999999999999"], "train.seed"),  # row 4
    (["optim.lr=.inf"], "expected a finite number"),  # row 10
    (["--name", "../../escape"], "one folder name"),  # row 13
    (["--name", "x" * 300], "one folder name"),  # row 1 (name too long for the file system)
    (["--preset", "../presets/quick"], "a preset is a shipped name"),  # row 13
])
def test_bad_values_are_one_line(tmp_path: Path, capsys, argv: list[str], expected: str) -> None:
    code, err = run_cli(capsys, "train", *TINY, "--out", str(tmp_path), *argv)
    assert code == 2 and expected in one_line(err)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_non_utf8_config_file(tmp_path: Path, capsys) -> None:  # row 5
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"optim:\n  lr: 0.1 \xff\xfe\n")
    code, err = run_cli(capsys, "train", "-c", str(bad), "--out", str(tmp_path / "runs"))
    assert code == 2 and "is not UTF-8 text" in one_line(err) and str(bad) in err


def test_amp_off_is_the_string_off() -> None:  # row 19: YAML 1.1 read `off` as False
    assert load_config(overrides=["train.amp=off"]).train.amp == "off"
    assert load_config(overrides=["train.channels_last=false"]).train.channels_last is False
    with pytest.raises(ConfigError, match=r"train\.channels_last"):
        load_config(overrides=["train.channels_last=off"])  # a bool key wants true/false, not "off"


def test_out_that_is_a_file_is_one_line(tmp_path: Path, capsys, fake_data) -> None:  # row 1
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run_cli(capsys, "train", *TINY, "--out", str(blocker), "--name", "r", "--quiet")
    assert code == 2 and str(blocker) in one_line(err)


def test_failed_start_leaves_nothing(tmp_path: Path, capsys) -> None:  # row 14
    code, err = run_cli(capsys, "train", *TINY, "data.download=false", "--data-dir", str(tmp_path / "no" / "data"),
                        "--out", str(tmp_path / "runs"), "--name", "r", "--quiet")
    assert code == 2 and one_line(err)
    assert not (tmp_path / "runs" / "r").exists() and not (tmp_path / "no").exists()


def test_second_process_on_a_run_directory_is_refused(tmp_path: Path, fake_data) -> None:  # row 7
    cfg = load_config(overrides=TINY)
    lock = RunLock(tmp_path / "r")
    lock.acquire()  # another live process (this one) holds the run
    try:
        with pytest.raises(CheckpointError, match=f"in use by process {os.getpid()}"):
            train(cfg, tmp_path / "r", data=fake_data, progress=False)
    finally:
        lock.release()
    (tmp_path / "r" / ".lock").write_text(json.dumps({"host": os.uname().nodename, "pid": 2**22 + 12345}))
    summary = train(cfg, tmp_path / "r", data=fake_data, progress=False)  # stale lock: taken over
    assert summary["status"] == "completed" and not (tmp_path / "r" / ".lock").exists()


def test_interrupted_setup_gives_no_resume_hint(tmp_path: Path, capsys, monkeypatch) -> None:  # row 8
    def interrupt(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "setup", interrupt)
    code, err = run_cli(capsys, "train", *TINY, "--out", str(tmp_path), "--name", "r", "--quiet")
    assert code == 130 and "nothing was written" in err and "--resume" not in err
    assert not (tmp_path / "r").exists()


def test_resume_removes_stale_temporaries(tmp_path: Path) -> None:  # row 9
    data = synthetic_cifar(600, 200)
    cfg = cfg_with("train.epochs=2")
    train(cfg_with("train.epochs=1"), tmp_path / "r", data=data, progress=False)
    for i in range(3):
        (tmp_path / "r" / "checkpoints" / f".last.pt.{i}abc.tmp").write_bytes(b"half a checkpoint")
    train(cfg, tmp_path / "r", resume=True, data=data, progress=False)
    assert not list((tmp_path / "r").rglob("*.tmp"))


def test_nan_validation_loss_means_diverged(tmp_path: Path, capsys, fake_data, monkeypatch) -> None:  # row 10
    import cifarlab.engine.trainer as trainer_module

    real = trainer_module.evaluate

    def nan_eval(*args, **kwargs):
        result = real(*args, **kwargs)
        result.loss = float("nan")
        return result

    monkeypatch.setattr(trainer_module, "evaluate", nan_eval)
    code, err = run_cli(capsys, "train", *TINY, "--out", str(tmp_path), "--name", "r", "--quiet")
    assert code == 3 and "diverged" in err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "diverged"


def test_resume_of_a_finished_run_with_an_override_is_refused(tmp_path: Path, capsys, fake_data) -> None:  # row 11
    assert run_cli(capsys, "train", *TINY, "--out", str(tmp_path), "--name", "r", "--quiet")[0] == 0
    code, err = run_cli(capsys, "train", "--resume", str(tmp_path / "r"), "optim.lr=0.2", "--quiet")
    assert code == 2 and "differs in optim.lr" in one_line(err)


@pytest.mark.parametrize("argv, key", [  # row 12: overrides and flags in any order, in every command
    (["train", "--preset", "quick", "train.epochs=1", "--subset", "2000", "optim.lr=0.1"], "subset"),
    (["bn-study", "train.steps=5", "--parts", "train", "seeds=[0]"], "parts"),
    (["config", "optim.lr=0.1", "--preset", "quick", "train.epochs=2"], "preset"),
])
def test_overrides_and_flags_mix(argv: list[str], key: str) -> None:
    from cifarlab.cli import build_parser, parse_args

    ns = parse_args(build_parser(), argv)
    assert ns.command == argv[0] and getattr(ns, key) is not None
    assert [a for a in argv if "=" in a] == [a for a in ns.overrides if "=" in a]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_checkpoint_is_refused_as_unsafe(tmp_path: Path) -> None:  # row 16
    import torch

    from cifarlab.engine.checkpoint import load_checkpoint

    path = tmp_path / "evil.pt"
    torch.save({"model": _Evil(), "config": {}}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "refused as unsafe" in message and "system" in message and "weights_only` set to `False" not in message


def test_corrupt_summary_resume_and_report(tmp_path: Path, capsys, fake_data) -> None:  # row 6
    from cifarlab.report.build import build_report

    assert run_cli(capsys, "train", *TINY, "--out", str(tmp_path), "--name", "good", "--quiet")[0] == 0
    assert run_cli(capsys, "train", *TINY, "--out", str(tmp_path), "--name", "bad", "--quiet")[0] == 0
    (tmp_path / "bad" / "summary.json").write_text("{ not json")
    code, err = run_cli(capsys, "train", "--resume", str(tmp_path / "bad"), "--quiet")
    assert code == 2 and "summary.json' is unreadable" in one_line(err)
    html_path, _ = build_report(tmp_path)
    err = capsys.readouterr().err
    assert "report skips" in err and "bad" in err
    assert "good" in html_path.read_text()


def test_full_disk_keeps_the_last_checkpoint_and_says_so(tmp_path: Path, capsys, fake_data, monkeypatch) -> None:
    import errno

    import cifarlab.engine.trainer as trainer_module

    real, calls = trainer_module.save_checkpoint, []

    def fill_up(path, state):
        calls.append(path)
        if len(calls) > 2:  # epoch 1 wrote best.pt and last.pt; then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, state)

    monkeypatch.setattr(trainer_module, "save_checkpoint", fill_up)
    tiny = [t for t in TINY if not t.startswith("train.epochs")]
    code, err = run_cli(capsys, "train", *tiny, "train.epochs=3", "--out", str(tmp_path), "--name", "r", "--quiet")
    line = one_line(err)
    assert code == 2 and "No space left on device" in line and "last complete checkpoint is kept" in line
    state = __import__("torch").load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and not list((tmp_path / "r").rglob("*.tmp"))
