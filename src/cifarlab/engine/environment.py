"""What a result was measured on: versions, device, threads. Saved as env.json in every run directory."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifarlab import version as cifarlab_version


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU (never a hard-coded ``cuda:3``)."""
    from cifarlab.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"config key 'train.device': got {name!r}, expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config key 'train.device': got '{name}', but CUDA is not available here (use auto or cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"config key 'train.device': got '{name}', but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"config key 'train.device': got '{name}', but MPS is not available here")
    return device


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The CPU features that decide which arithmetic is fast here (/proc/cpuinfo names); recorded beside every timing.
TIMING_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_flags() -> list[str]:
    """The ``TIMING_FLAGS`` this CPU has (empty where /proc/cpuinfo does not exist); a fresh list each call."""
    return list(_read_cpu_flags())


@functools.cache
def _read_cpu_flags() -> tuple[str, ...]:
    """/proc/cpuinfo read once per process: ``resolve_amp`` asks on every model build and evaluation where
    torch's own bf16 probes do not answer."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return tuple(f for f in TIMING_FLAGS if f in have)
    except OSError:
        pass
    return ()


def cpu_has_native_bf16() -> bool:
    """bf16 dot products in hardware (AVX512_BF16 or AMX): asked of torch, else read from the CPU flags."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if probe is not None and probe():
        return True
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if amx is not None and amx():
        return True
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


@functools.cache
def _git_commit() -> str | None:
    """The commit of the checkout this process runs from, read once: a sweep's later runs keep the commit of the
    code it loaded, even if HEAD moves meanwhile; ``-dirty`` when tracked files differ from it."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=7"],
            cwd=Path(cifarlab_version.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info(device: torch.device | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cifarlab": cifarlab_version.__version__,
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
    }
    if device is not None:
        info["device"] = str(device)
        if device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(device)
            info["cudnn"] = torch.backends.cudnn.version()
    return info
