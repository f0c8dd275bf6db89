"""The one device rule of cfrec: what ``device`` (the apps' top-level key, `TrainConfig.device`,
a KNN model's ``device``) may say and which `torch.device` it means."""

from __future__ import annotations

import re

import torch

from cfrec.errors import ConfigError

DEVICES = "auto, cpu, cuda or cuda:N"


def check_device(device: str | torch.device, key: str = "device") -> str:
    """``device`` as a string, if it is one of `DEVICES` (no GPU needed to pass); else a `ConfigError`."""
    name = str(device)
    if name not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", name):
        raise ConfigError(key, f"must be {DEVICES}, got {device!r}")
    return name


def resolve_device(device: str | torch.device = "auto", key: str = "device", *, present: bool = True) -> torch.device:
    """``auto`` → CUDA when available, else the CPU; ``cpu``; ``cuda`` / ``cuda:N`` only where
    CUDA (and GPU N) is available: asking for it without one is a `ConfigError`, never a silent
    CPU run. ``present=False`` skips that last check (a model rebuilt from a GPU run's config,
    to be loaded elsewhere)."""
    name = check_device(device, key)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(name)
    if resolved.type == "cuda" and present:
        if not torch.cuda.is_available():
            raise ConfigError(key, f"{name} was asked for but no GPU is available (CUDA is not): use cpu or auto")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(key, f"{name} was asked for but there are {torch.cuda.device_count()} GPU(s)")
    return resolved
