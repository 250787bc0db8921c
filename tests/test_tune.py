"""`cifarlab tune`: spec checks, a tiny synthetic search, pruning, test-set withholding, kill -9 resume, --jobs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from tests.synthetic import TINY, synthetic_cifar

from cifarlab.config import load_config, read_yaml
from cifarlab.engine.trainer import Trainer, train
from cifarlab.errors import ConfigError
from cifarlab.experiments.tune import open_study, run_tune, storage_url, tune_dir_for
from cifarlab.experiments.tune_spec import load_tune_spec, parse_tune_spec

optuna = pytest.importorskip("optuna")
REPO = Path(__file__).resolve().parent.parent
LR_GOOD, LR_BAD = 0.05, 1e-5


def tiny_spec(**keys):
    raw = {"name": "tiny", "base": {"overrides": [*TINY, "train.epochs=2"]},
           "space": {"optim.lr": {"type": "categorical", "choices": [LR_BAD, LR_GOOD]}},
           "sampler": "grid", "pruner": "none", "n_trials": 2, "seed": 0}
    raw.update(keys)
    return parse_tune_spec(raw, source="tune file 't.yaml'")


@pytest.fixture(scope="module")
def data():
    return synthetic_cifar()


@pytest.fixture(scope="module")
def searched(data, tmp_path_factory):
    """One tiny tune (two LRs, 2 epochs), with every test-set evaluation recorded."""
    out = tmp_path_factory.mktemp("tune")
    tested: list[Path] = []
    original = Trainer._test

    def spy(self, summary):
        tested.append(Path(self.run_dir))
        return original(self, summary)

    Trainer._test = spy
    try:
        spec = tiny_spec()
        result = run_tune(spec, out, data=data)
    finally:
        Trainer._test = original
    return spec, result, tested


@pytest.mark.parametrize(("keys", "fragment"), [
    ({"sampler": "bayes"}, "key 'sampler': got 'bayes'"),
    ({"objective": "test_acc"}, "key 'objective': got 'test_acc'"),
    ({"n_trials": 0}, "key 'n_trials': got 0"),
    ({"space": {"optim.lr": {"type": "float", "low": 0.1, "high": 0.01}}}, "space 'optim.lr': 'low' (0.1)"),
    ({"space": {"optim.lr": {"type": "float", "low": 0.0, "high": 1, "log": True}}}, "needs low > 0"),
    ({"space": {"optim.lr": {"type": "float", "lo": 0.1}}}, "unknown key 'lo'"),
    ({"space": {"optim.lrr": {"type": "categorical", "choices": [0.1]}}}, "unknown config key 'optim.lrr'"),
    ({"space": {"optim.lr": {"type": "float", "low": 0.01, "high": 0.1}}}, "sampler 'grid' searches categorical"),
    ({"pruner": "asha"}, "key 'pruner': got 'asha'"),
    ({"n_trial": 3}, "unknown tune key 'n_trial'"),
])
def test_spec_mistakes_are_one_line_naming_file_and_key(keys, fragment):
    with pytest.raises(ConfigError) as exc:
        tiny_spec(**keys)
    message = str(exc.value)
    assert "\n" not in message and message.startswith("tune file 't.yaml'"), message
    assert fragment in message, message


def test_shipped_presets_parse_at_both_scales():
    for name in ("cnn3", "fast"):
        quick, full = load_tune_spec(name, scale="quick"), load_tune_spec(name, scale="full")
        assert quick.n_trials < full.n_trials
        assert quick.base["data"]["subset"] == 10000 and "subset" not in full.base.get("data", {})


def test_tiny_tune_finds_the_better_learning_rate(searched):
    _spec, result, _ = searched
    assert result.best_params == {"optim.lr": LR_GOOD}
    rows = list(csv.DictReader((result.tune_dir / "trials.csv").open()))
    assert len(rows) == 2 and {r["state"] for r in rows} == {"complete"}
    values = {float(r["optim.lr"]): float(r["value"]) for r in rows}
    assert values[LR_GOOD] > values[LR_BAD] + 0.2  # clearly different, not a coin flip
    assert result.final["status"] == "completed" and result.final["test_acc"] > 0.3


def test_test_set_is_never_read_during_the_search(searched):
    _, result, tested = searched
    assert tested == [result.tune_dir / "final"]  # one test evaluation: the final retrain
    for summary_path in (result.tune_dir / "trials").glob("*/summary.json"):
        summary = json.loads(summary_path.read_text())
        assert summary["test_withheld"] is True and summary["test_images"] == 0
        assert "test_acc" not in summary


def test_study_reopens_with_plain_optuna(searched):
    _spec, result, _ = searched
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{result.tune_dir / 'study.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2 and study.best_params == {"optim.lr": LR_GOOD}
    assert study.best_trial.user_attrs["run_dir"].startswith("trials/")


def test_outputs_and_report(searched, tmp_path):
    from cifarlab.report.build import build_report

    _, result, _ = searched
    for name in ("trials.csv", "tune.json", "best_config.yaml", "manifest.json", "figures/history.png",
                 "figures/slices.png"):
        assert (result.tune_dir / name).is_file(), name
    _html, md = build_report(result.tune_dir, tmp_path / "r.html", None)
    text = Path(md).read_text()
    assert "Tune tiny" in text and "Optimisation history" in text and "t0000" not in text


def test_best_config_round_trips_through_train(searched, data, tmp_path):
    from cifarlab.cli import main

    _, result, _ = searched
    best = result.tune_dir / "best_config.yaml"
    assert main(["config", "-c", str(best)]) == 0  # what `cifarlab train -c best_config.yaml` loads
    cfg = load_config(files=[str(best)])
    assert cfg.optim.lr == LR_GOOD
    again = train(cfg, tmp_path / "again", data=data, progress=False)
    assert again["final_val_acc"] == result.final["final_val_acc"]
    assert again["test_acc"] == result.final["test_acc"]


def test_rerun_resumes_and_tests_nothing_twice(searched, data):
    spec, result, tested = searched
    before = len(tested)
    again = run_tune(spec, result.tune_dir.parent, data=data)
    assert again.best_trial == result.best_trial and again.n_trials == result.n_trials
    assert len(tested) == before  # the finished final run is reused, not re-tested


def test_a_clearly_worse_trial_is_pruned(data, tmp_path):
    spec = tiny_spec(sampler="random", pruner="median", prune_startup_trials=1, prune_warmup_epochs=0,
                     base={"overrides": [*TINY, "train.epochs=3"]})
    tune_dir = tune_dir_for(spec, tmp_path)
    tune_dir.mkdir(parents=True)
    study = open_study(spec, storage_url(spec, tune_dir))
    study.enqueue_trial({"optim.lr": LR_GOOD})
    study.enqueue_trial({"optim.lr": LR_BAD})
    run_tune(spec, tmp_path, data=data, final=False)
    trials = {t.params["optim.lr"]: t for t in optuna.load_study(
        study_name="tiny", storage=storage_url(spec, tmp_path / "tiny")).trials}
    assert trials[LR_GOOD].state == optuna.trial.TrialState.COMPLETE
    assert trials[LR_BAD].state == optuna.trial.TrialState.PRUNED
    summary = json.loads((tmp_path / "tiny" / trials[LR_BAD].user_attrs["run_dir"] / "summary.json").read_text())
    assert summary["status"] == "pruned" and summary["epochs_run"] == 1 < summary["epochs_planned"]


def test_pruning_callback_does_not_change_training(data, tmp_path):
    """A trial that is not pruned trains exactly as the same config without the tune machinery."""
    spec = tiny_spec(sampler="random", pruner="median", n_trials=1)
    result = run_tune(spec, tmp_path, data=data, final=False)
    run = result.tune_dir / "trials" / "t0000"
    plain = train(load_config(files=[str(run / "config.yaml")]), tmp_path / "plain", data=data,
                  progress=False)
    assert json.loads((run / "summary.json").read_text())["final_val_acc"] == plain["final_val_acc"]


SCRIPT = """
import sys, time
sys.path.insert(0, {repo!r})
from cifarlab.experiments import tune as tune_mod
from cifarlab.experiments.tune_spec import parse_tune_spec
from tests.synthetic import TINY, synthetic_cifar

slow = tune_mod.PruneOnValidation.on_epoch_end
def on_epoch_end(self, trainer, epoch, row):  # slow epochs: the test has time to kill a trial mid-run
    time.sleep(0.4)
    return slow(self, trainer, epoch, row)
tune_mod.PruneOnValidation.on_epoch_end = on_epoch_end
spec = parse_tune_spec({{"name": "kill", "base": {{"overrides": [*TINY, "train.epochs=4"]}},
    "space": {{"optim.lr": {{"type": "categorical", "choices": [0.01, 0.02, 0.05, 0.1]}}}},
    "sampler": "grid", "pruner": "none", "n_trials": 4, "seed": 0}})
tune_mod.run_tune(spec, {out!r}, data=synthetic_cifar(), final=False, log=print)
print("DONE")
"""


def _start(script: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def test_kill_9_then_rerun_loses_and_repeats_no_trial(tmp_path):
    script = tmp_path / "tune_kill.py"
    script.write_text(SCRIPT.format(repo=str(REPO), out=str(tmp_path / "out")))
    tune_dir = tmp_path / "out" / "kill"
    proc = _start(script)
    deadline = time.time() + 240
    # Kill once trial 0 is finished and trial 1 is mid-run (an epoch checkpointed, no summary yet).
    while time.time() < deadline:
        t1 = tune_dir / "trials" / "t0001"
        if (tune_dir / "trials" / "t0000" / "summary.json").is_file() and (t1 / "checkpoints" / "last.pt").is_file() \
                and not (t1 / "summary.json").is_file():
            break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    epochs_at_kill = len(list(csv.DictReader((t1 / "epochs.csv").open())))
    assert 1 <= epochs_at_kill < 4
    second = _start(script)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0 and "DONE" in out, out
    assert "trial 1 was interrupted" in out
    study = optuna.load_study(study_name="kill", storage=f"sqlite:///{tune_dir / 'study.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    lrs = sorted(t.params["optim.lr"] for t in complete)
    assert lrs == [0.01, 0.02, 0.05, 0.1]  # none lost, none repeated
    interrupted = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert len(interrupted) == 1 and interrupted[0].number == 1
    resumed = next(t for t in complete if t.user_attrs.get("requeued_from") == 1)
    assert resumed.user_attrs["run_dir"] == "trials/t0001"  # the killed run resumed in its own folder
    rows = list(csv.DictReader((t1 / "epochs.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    rows = list(csv.DictReader((tune_dir / "trials.csv").open()))
    assert len(rows) == 4 and {r["state"] for r in rows} == {"complete"}


def test_two_jobs_share_one_study_and_give_the_sequential_trials(data, tmp_path):
    """Grid sampler: the set of trials does not depend on order, and each trial's result depends only on its
    config, so --jobs 2 (two processes on one SQLite study) gives the same trials and values as --jobs 1."""
    choices = [0.01, 0.02, 0.05, 0.1]
    spec = tiny_spec(space={"optim.lr": {"type": "categorical", "choices": choices}}, n_trials=4)
    # The workers of --jobs 2 train with 1 thread each (cpus_per_trial=1); CPU sums depend on the thread count,
    # so the sequential reference runs at 1 thread too.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seq = run_tune(spec, tmp_path / "seq", data=data, final=False)
    finally:
        torch.set_num_threads(threads)
    par = run_tune(spec, tmp_path / "par", data=data, final=False, jobs=2, cpus_per_trial=1)

    def values(result):
        study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{result.tune_dir / 'study.db'}")
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        return {t.params["optim.lr"]: t.value for t in done}, {t.user_attrs["pid"] for t in done}

    (v_seq, _), (v_par, pids) = values(seq), values(par)
    assert sorted(v_seq) == choices and v_par == v_seq
    assert len(pids) == 2  # both processes ran trials


def test_cli_tune_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""
        name: bad
        base: {preset: quick}
        space: {optim.lr: {type: float, low: 1, high: 0.1}}
    """))
    proc = subprocess.run([sys.executable, "-m", "cifarlab.cli", "tune", str(bad), "--out", str(tmp_path)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("cifarlab: error:")]
    assert len(errors) == 1 and "space 'optim.lr'" in errors[0] and "bad.yaml" in errors[0], proc.stderr
    assert read_yaml(bad)["name"] == "bad"


def test_missing_data_is_one_error_and_leaves_no_study(tmp_path):
    spec = tmp_path / "t.yaml"
    spec.write_text(textwrap.dedent("""
        name: nodata
        base: {preset: quick_cnn, data: {download: false}}
        space: {optim.lr: {type: float, low: 0.01, high: 0.1}}
    """))
    empty, out = tmp_path / "empty", tmp_path / "out"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "cifarlab.cli", "tune", str(spec), "--out", str(out),
                           "--data-dir", str(empty)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("cifarlab: error:")]
    assert len(errors) == 1 and "CIFAR-10 not found" in errors[0], proc.stderr
    assert not out.exists()


def test_a_diverging_trial_is_recorded_and_the_search_goes_on(data, tmp_path):
    spec = tiny_spec(space={"optim.lr": {"type": "categorical", "choices": [LR_GOOD, 1e8]}},
                     base={"overrides": [*TINY, "train.epochs=1", "model.options.norm=none"]})
    result = run_tune(spec, tmp_path, data=data, final=False)
    rows = {float(r["optim.lr"]): r for r in csv.DictReader((result.tune_dir / "trials.csv").open())}
    assert rows[1e8]["state"] == "fail" and rows[1e8]["status"] == "diverged" and "nan" in rows[1e8]["error"]
    assert rows[LR_GOOD]["state"] == "complete" and result.best_params == {"optim.lr": LR_GOOD}


def test_ray_workers_share_the_study(data, tmp_path):
    from cifarlab.experiments.executors import ray_available

    if not ray_available():
        pytest.skip("ray extra not installed")
    spec = tiny_spec(space={"optim.lr": {"type": "categorical", "choices": [0.01, 0.05, 0.1]}}, n_trials=3)
    result = run_tune(spec, tmp_path, data=data, final=False, executor="ray", jobs=2, cpus_per_trial=1)
    rows = list(csv.DictReader((result.tune_dir / "trials.csv").open()))
    seen = [(r["number"], r["state"], r["status"], r["optim.lr"], r["error"]) for r in rows]
    assert sorted(float(r["optim.lr"]) for r in rows) == [0.01, 0.05, 0.1], seen
    assert {r["state"] for r in rows} == {"complete"}, seen


def _ask_many(url: str, start, queue, n: int) -> None:
    study = open_study(tiny_spec(sampler="random"), url)
    start.wait()
    queue.put([study.ask().number for _ in range(n)])


def test_parallel_workers_never_get_the_same_waiting_trial(tmp_path):
    """Four processes pop 80 waiting trials at once from one SQLite study: each trial goes to one of them.
    (Plain Optuna on SQLite hands a waiting trial to two workers: Python's sqlite3 starts the transaction only
    at the write, after both have read it as waiting.)"""
    import multiprocessing as mp

    spec = tiny_spec(sampler="random")
    url = storage_url(spec, tmp_path)
    study = open_study(spec, url)
    for i in range(80):
        study.enqueue_trial({"optim.lr": 0.01 + i * 1e-4})
    ctx = mp.get_context("spawn")
    queue, start = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_ask_many, args=(url, start, queue, 20)) for _ in range(4)]
    for p in procs:
        p.start()
    time.sleep(2)  # all set up, then all at once
    start.set()
    got = [n for _ in procs for n in queue.get(timeout=120)]
    for p in procs:
        p.join(timeout=60)
    assert sorted(got) == list(range(80))


def test_a_trial_killed_before_it_was_stamped_is_requeued_once_stale(tmp_path, monkeypatch):
    """A worker killed between asking for a trial and stamping it (host, pid) leaves a RUNNING trial nobody owns:
    left alone while it may still be stamped, failed and re-enqueued once it is stale."""
    from cifarlab.experiments import tune

    spec = tiny_spec(sampler="tpe")
    study = open_study(spec, storage_url(spec, tmp_path))
    study.ask()  # RUNNING, no host/pid
    assert tune.requeue_orphans(study, lambda _: None) == 0
    monkeypatch.setattr(tune, "UNSTAMPED_TIMEOUT_S", -1)
    lines: list[str] = []
    assert tune.requeue_orphans(study, lines.append) == 1
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert study.trials[0].user_attrs["interrupted"] is True and "trial 0" in lines[0]


def test_a_spent_timeout_runs_no_trial_and_says_so(data, tmp_path):
    spec = tiny_spec(n_trials=None, timeout=1e-6)
    result = run_tune(spec, tmp_path, data=data)
    assert result.best_trial is None and result.final is None and result.n_trials == 0
    assert json.loads((result.tune_dir / "tune.json").read_text())["best_trial"] is None


def test_tensorboard_hparams_per_trial_without_test_metrics(data, tmp_path):
    """`tensorboard=true` in the base: every trial logs an HParams session (its searched value among the
    hyper-parameters) with validation metrics only; the final retrain alone logs test metrics."""
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'cifarlab[tensorboard]')")
    from tests.test_progress import _events, _session_hparams

    spec = tiny_spec(base={"overrides": [*TINY, "train.epochs=2", "tensorboard=true"]})
    result = run_tune(spec, tmp_path, data=data)
    trials = sorted((result.tune_dir / "trials").iterdir())
    assert len(trials) == 2
    lrs = set()
    for trial in trials:
        acc = _events(trial)
        lrs.add(_session_hparams(acc)["optim.lr"])
        tags = acc.Tags()["scalars"]
        assert not [t for t in tags if t.startswith("final/test")]  # the test set was withheld
        summary = json.loads((trial / "summary.json").read_text())
        assert acc.Scalars("final/final_val_acc")[-1].value == pytest.approx(summary["final_val_acc"])
    assert lrs == {LR_BAD, LR_GOOD}
    final = _events(result.tune_dir / "final")
    assert final.Scalars("final/test_acc")[-1].value == pytest.approx(result.final["test_acc"])
