"""The `cifarlab` command as a user runs it: exit codes, one-line errors, real-data smoke runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cifarlab.config import load_config
from cifarlab.data import load_cifar10
from cifarlab.engine.trainer import train


def run_cli(*args: str, env_extra: dict[str, str] | None = None, timeout: int = 300):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "cifarlab.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def assert_one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("cifarlab: error:")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def test_help_lists_commands_and_examples():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for word in ("train", "eval", "models", "presets", "examples:", "cifarlab train --preset quick"):
        assert word in proc.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["train", "optim.lrr=0.1"], ["unknown config key 'optim.lrr'", "valid keys here"]),
        (["train", "train.epochs=zero"], ["'train.epochs'", "expected int"]),
        (["train", "--preset", "nope"], ["unknown preset 'nope'", "quick"]),
        (["train", "model.name=resnet1000"], ["unknown model 'resnet1000'", "vgg_a"]),
        (["train", "model.options.widthh=2"], ["model 'quick_cnn' has no option 'widthh'", "widths="]),
        (["train", "-c", "missing.yaml"], ["config file 'missing.yaml' does not exist"]),
        (["train", "--resume", "no/such/run"], ["'no/such/run' is not a run directory"]),
        (["eval", "no/such/run"], ["neither a run directory nor a checkpoint"]),
        (["models", "--summary", "nope"], ["unknown model 'nope'"]),
    ],
)
def test_user_mistakes_give_one_line(tmp_path, args, fragments):
    assert_one_line_error(run_cli(*args, "--out", str(tmp_path)) if args[0] == "train" and "--resume" not in args
                          else run_cli(*args), *fragments)


def test_missing_data_without_download(tmp_path):
    proc = run_cli("train", "--data-dir", str(tmp_path / "empty"), "data.download=false", "--out", str(tmp_path),
                   env_extra={"CIFARLAB_CACHE": str(tmp_path / "cache")})
    assert_one_line_error(proc, "not found", "download")


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    assert_one_line_error(run_cli("eval", str(bad)), f"checkpoint '{bad}' is unreadable")


def test_models_table_has_exact_counts():
    proc = run_cli("models", "quick_cnn", "vgg_a", "vgg_a_bn")
    assert proc.returncode == 0, proc.stderr
    assert "9,750,922" in proc.stdout and "9,756,426" in proc.stdout
    summary = run_cli("models", "--summary", "vgg_a")
    assert summary.returncode == 0 and "9,750,922" in summary.stdout


@pytest.mark.parametrize("name", ["quick_cnn", "fast_net", "mobilenetv2", "densenet121", "vgg_a_noisy_bn"])
def test_models_counts_on_the_meta_device_equal_a_real_build(name):
    from cifarlab.models import create
    from cifarlab.models.summary import count_macs, count_params, model_info

    model = create(name)
    info = model_info(name)
    assert (info["params"], info["macs"]) == (count_params(model), count_macs(model))


def test_config_command_prints_resolved_values():
    proc = run_cli("config", "--preset", "quick", "optim.lr=0.123")
    assert proc.returncode == 0, proc.stderr
    cfg = load_config("quick", overrides=["optim.lr=0.123"])
    assert f"lr: {cfg.optim.lr}" in proc.stdout and "name: fast_net" in proc.stdout and "- 32" in proc.stdout


@pytest.mark.parametrize("override,message", [
    ("model.options.bogus=1", "model 'quick_cnn' has no option 'bogus'"),
    ("model.options.activation=swishh", "model 'quick_cnn': unknown activation 'swishh'"),
])
def test_config_command_refuses_what_train_refuses(override, message):
    for command in ("config", "train"):
        proc = run_cli(command, "model.name=quick_cnn", override, "--data-dir", "/nonexistent", "data.download=false")
        assert_one_line_error(proc, message)


# -- real data -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_data(cifar_archive, tmp_path_factory):
    return load_cifar10(cifar_archive, download=False, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.mark.realdata
def test_real_data_training_well_above_chance(tmp_path, real_data):
    """quick_cnn, 5k real training images, 3 epochs: well above the 10 % of chance."""
    cfg = load_config("quick", overrides=[
        "data.subset=5000", "data.val_size=1000", "data.test_subset=2000", "train.epochs=3", "train.batch_size=64",
    ])
    summary = train(cfg, tmp_path / "run", data=real_data, progress=False)
    assert summary["status"] == "completed"
    assert summary["train_images"] == 5000 and summary["test_images"] == 2000
    assert summary["final_val_acc"] > 0.40
    assert summary["test_acc"] > 0.40


@pytest.mark.realdata
def test_cli_train_then_eval_on_real_archive(tmp_path, cifar_archive):
    env = {"CIFARLAB_CACHE": str(tmp_path / "cache")}
    proc = run_cli("train", "--preset", "quick", "--data-dir", str(cifar_archive), "--subset", "1000",
                   "--epochs", "1", "data.val_size=500", "data.test_subset=500", "--out", str(tmp_path),
                   "--name", "smoke", "--quiet", env_extra=env)
    assert proc.returncode == 0, proc.stderr
    assert "test loss / acc" in proc.stdout
    summary = json.loads((tmp_path / "smoke" / "summary.json").read_text())
    assert summary["test_images"] == 500 and summary["status"] == "completed"
    evaluated = run_cli("eval", str(tmp_path / "smoke"), "--data-dir", str(cifar_archive), "--json", env_extra=env)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["test_acc"] == pytest.approx(summary["test_acc"])
    assert set(result["per_class_acc"]) == {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                            "horse", "ship", "truck"}
