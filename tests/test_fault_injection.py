"""Fault injection: a training (and a sweep) killed with SIGKILL at seeded random moments, several times, then
resumed, ends with the numbers of an uninterrupted run and leaves no stray files (temporaries, locks)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"

RUN_SCRIPT = """
import sys
sys.path[:0] = [{tests!r}, {src!r}]
from synthetic import cfg_with, synthetic_cifar
from cifarlab.engine.trainer import train
train(cfg_with("train.epochs=4"), {run!r}, resume=True, data=synthetic_cifar(600, 200), progress=False)
"""

SWEEP_SCRIPT = """
import sys
sys.path[:0] = [{tests!r}, {src!r}]
from synthetic import synthetic_cifar
from cifarlab.experiments.sweep import parse_spec, run_sweep
spec = parse_spec({{"name": "faults", "base": {{"model": {{"name": "quick_cnn", "options": {{"widths": [8, 8, 8]}}}},
                   "data": {{"val_size": 100}}, "train": {{"batch_size": 50, "epochs": 3}}}},
                   "axes": {{"optim.lr": [0.05, 0.1]}}, "seeds": [0]}})
run_sweep(spec, {out!r}, data=synthetic_cifar(600, 200))
"""


def run_once(script: str) -> float:
    """Run ``script`` to the end; its wall time (the kills below land inside such a run)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    return time.perf_counter() - start


def kill_randomly(script: str, done: Path, seed: int, kills: int, duration: float) -> int:
    """Run ``script`` repeatedly, SIGKILLed after a seeded random fraction of ``duration``, until an attempt ends
    by itself (the last is never killed), as a user re-runs an interrupted command until it finishes; then
    ``done`` must exist. Return how many kills were made. (Stopping as soon as ``done`` appeared would miss a
    kill that lands after it is written, while the process still holds its lock or writes other files.)"""
    rng, made = random.Random(seed), 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for attempt in range(kills + 1):
        proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rng.uniform(0.3, 0.9) * duration if attempt < kills else 300)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            made += 1
            continue
        assert proc.returncode == 0, f"attempt {attempt} failed with exit code {proc.returncode}"
        assert done.exists(), f"{done} never appeared"
        return made
    raise AssertionError("the unkilled last attempt never ran")


def strays(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name in (".lock",) or ".part" in p.name]


def test_killed_training_resumes_to_identical_numbers(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    duration = run_once(RUN_SCRIPT.format(tests=str(TESTS), src=str(SRC), run=str(whole)))
    run = tmp_path / "killed"
    script = RUN_SCRIPT.format(tests=str(TESTS), src=str(SRC), run=str(run))
    assert kill_randomly(script, run / "summary.json", seed=1, kills=4, duration=duration) >= 1
    a, b = (json.loads((d / "summary.json").read_text()) for d in (whole, run))
    assert (b["test_acc"], b["test_loss"], b["steps"]) == (a["test_acc"], a["test_loss"], a["steps"])
    for name in ("steps.csv", "epochs.csv"):
        keep = 6 if name == "epochs.csv" else 5  # epochs.csv: drop the timing columns (seconds, images/s)
        rows = [[",".join(r.split(",")[:keep]) for r in (d / name).read_text().splitlines()] for d in (whole, run)]
        assert rows[0] == rows[1], name
    assert strays(run) == []


@pytest.mark.parametrize("seed", [7])
def test_killed_sweep_resumes_to_identical_numbers(tmp_path: Path, seed: int) -> None:
    duration = run_once(SWEEP_SCRIPT.format(tests=str(TESTS), src=str(SRC), out=str(tmp_path / "whole")))
    script = SWEEP_SCRIPT.format(tests=str(TESTS), src=str(SRC), out=str(tmp_path / "killed"))
    done = tmp_path / "killed" / "faults" / "results.csv"
    assert kill_randomly(script, done, seed=seed, kills=3, duration=duration) >= 1
    for lr in ("0.05", "0.1"):
        rel = f"faults/lr={lr}/seed0"
        a = json.loads((tmp_path / "whole" / rel / "summary.json").read_text())
        b = json.loads((tmp_path / "killed" / rel / "summary.json").read_text())
        assert (a["test_acc"], a["final_train_loss"]) == (b["test_acc"], b["final_train_loss"]), rel
    status = json.loads((tmp_path / "killed" / "faults" / "sweep_status.json").read_text())
    assert {r["status"] for r in status["runs"]} == {"completed"} and status["state"] == "finished"
    assert strays(tmp_path / "killed") == []
