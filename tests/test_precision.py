"""train.amp=auto: bf16 autocast where the CPU has bf16 in hardware, fp32 elsewhere; what stays fp32 under bf16."""

from __future__ import annotations

import json

import pytest
import torch

from cifarlab.engine import environment
from cifarlab.engine.build import autocast_context, resolve_amp
from cifarlab.engine.trainer import Trainer, train
from synthetic import cfg_with, synthetic_cifar

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _cpu(monkeypatch: pytest.MonkeyPatch, *, avx512_bf16: bool, amx: bool, flags: list[str]) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(environment, "cpu_flags", lambda: flags)


@pytest.mark.parametrize(("avx512_bf16", "amx", "flags", "expected"), [
    (True, False, [], "bf16"),  # AVX512_BF16 (e.g. AMD Zen 4/5, Intel Cooper Lake)
    (False, True, [], "bf16"),  # AMX (Intel Sapphire Rapids and later)
    (False, False, ["avx2", "fma", "avx512f", "amx_bf16"], "bf16"),  # torch's probes absent: the CPU flags say so
    (False, False, ["avx2", "fma", "avx512f"], "off"),  # AVX-512 without bf16: emulated bf16 is slower
    (False, False, ["avx2", "fma"], "off"),  # AVX2 only
])
def test_auto_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool, flags: list[str],
                              expected: str) -> None:
    _cpu(monkeypatch, avx512_bf16=avx512_bf16, amx=amx, flags=flags)
    assert resolve_amp("auto", CPU) == expected
    assert resolve_amp("auto", CUDA) == "bf16"
    for explicit in ("off", "bf16", "fp16"):  # an explicit setting is never second-guessed
        assert resolve_amp(explicit, CPU) == explicit


@pytest.fixture
def fresh_cpu_flags():
    """cpu_flags is cached per process: read a patched /proc/cpuinfo afresh, and forget it afterwards."""
    environment._read_cpu_flags.cache_clear()
    yield
    environment._read_cpu_flags.cache_clear()


def test_cpu_flags_are_read_from_proc_cpuinfo_once(monkeypatch: pytest.MonkeyPatch, tmp_path,
                                                    fresh_cpu_flags) -> None:
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma avx512f avx512_bf16 sha_ni\n")
    real_path, reads = environment.Path, []

    def patched(p):
        if p == "/proc/cpuinfo":
            reads.append(p)
            return real_path(fake)
        return real_path(p)

    monkeypatch.setattr(environment, "Path", patched)
    # torch's probes silent, as on older torch builds: resolve_amp falls back to the flags each time
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert environment.cpu_flags() == ["avx2", "fma", "avx512f", "avx512_bf16"]
    for _ in range(3):
        resolve_amp("auto", CPU)
    assert environment.cpu_flags() == ["avx2", "fma", "avx512f", "avx512_bf16"]
    assert len(reads) == 1


def test_bf16_autocast_keeps_weights_statistics_loss_and_optimizer_state_fp32(tmp_path) -> None:
    cfg = cfg_with("train.epochs=1", "train.amp=bf16", "train.device=cpu")
    trainer = Trainer(cfg, tmp_path / "run", data=synthetic_cifar(300, 100), progress=False)
    trainer.setup()
    x = trainer.augment.train(trainer.train_x[:50], torch.Generator().manual_seed(0))
    with trainer.autocast():
        logits = trainer.model(x)
        loss = trainer.loss_fn(logits, trainer.train_y[:50])
    assert logits.dtype == torch.bfloat16  # the forward pass really runs in bf16 ...
    assert loss.dtype == torch.float32  # ... the loss does not
    loss.backward()
    trainer.optimizer.step()
    tensors = [*trainer.model.parameters(), *trainer.model.buffers()]
    assert all(t.dtype in (torch.float32, torch.int64) for t in tensors)  # weights, BN running stats, counters
    momenta = [s["momentum_buffer"] for s in trainer.optimizer.state.values()]
    assert momenta and all(m.dtype == torch.float32 for m in momenta)


def test_bf16_run_learns_and_records_its_precision(tmp_path) -> None:
    data = synthetic_cifar(600, 200)
    summary = train(cfg_with("train.epochs=3", "train.amp=bf16", "train.device=cpu"), tmp_path / "bf16", data=data,
                    progress=False)
    assert summary["amp"] == "bf16"
    assert summary["test_acc"] > 0.5  # chance is 0.1: bf16 training works, not just runs
    assert json.loads((tmp_path / "bf16" / "env.json").read_text())["amp"] == "bf16"
    fp32 = train(cfg_with("train.epochs=3", "train.amp=off", "train.device=cpu"), tmp_path / "fp32", data=data,
                 progress=False)
    assert fp32["amp"] == "off"
    assert abs(summary["test_acc"] - fp32["test_acc"]) < 0.15  # the same learning, to bf16's rounding


def test_env_json_names_the_cpu_flags(tmp_path) -> None:
    train(cfg_with("train.epochs=1", "train.amp=auto"), tmp_path / "r", data=synthetic_cifar(300, 100), progress=False)
    env = json.loads((tmp_path / "r" / "env.json").read_text())
    assert env["cpu_flags"] == environment.cpu_flags()
    assert env["amp"] == resolve_amp("auto", CPU)
    assert env["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_autocast_context_off_is_a_no_op() -> None:
    with autocast_context(cfg_with("train.amp=off"), CPU)():
        assert not torch.is_autocast_enabled("cpu")
    with autocast_context(cfg_with("train.amp=bf16"), CPU)():
        assert torch.is_autocast_enabled("cpu")


def test_git_commit_is_the_checkout_the_process_loaded(tmp_path) -> None:
    """Read once per process (a sweep's runs keep the commit of the code it imported, even if HEAD moves), with
    ``-dirty`` when tracked files differ: env.json said a later commit for a sweep's later runs before."""
    import subprocess
    from pathlib import Path

    repo = Path(environment.__file__).resolve().parents[3]
    if not (repo / ".git").exists():
        pytest.skip("cifarlab is not run from a git checkout here")
    describe = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=repo,
                              capture_output=True, text=True, check=True).stdout.strip()
    environment._git_commit.cache_clear()
    assert environment.environment_info()["git_commit"] == describe
    calls = environment._git_commit.cache_info().hits
    environment.environment_info()
    assert environment._git_commit.cache_info().hits == calls + 1  # the second run did not ask git again
