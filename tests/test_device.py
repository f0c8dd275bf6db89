"""The one device rule (cfrec.device): the apps' ``device``, TrainConfig's and a KNN model's."""

from __future__ import annotations

import pytest
import torch

from cfrec.device import resolve_device
from cfrec.errors import ConfigError
from cfrec.models import UserKNN
from cfrec.train.config import TrainConfig


def test_auto_is_cuda_when_available_else_cpu():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("bad", ["tpu", "gpu", "cuda:x", "CPU", "", "mps"])
def test_other_names_are_config_errors(bad):
    with pytest.raises(ConfigError, match=r"^device: must be auto, cpu, cuda or cuda:N"):
        resolve_device(bad)
    with pytest.raises(ConfigError, match=r"^device: "):
        TrainConfig(device=bad)
    with pytest.raises(ConfigError, match=r"^device: "):
        UserKNN(device=bad)


def test_the_key_is_named():
    with pytest.raises(ConfigError, match=r"^train\.device: "):
        resolve_device("tpu", key="train.device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("asked", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_a_clear_error(asked, monkeypatch):
    with pytest.raises(ConfigError, match=r"^device: .*no GPU is available"):
        resolve_device(asked)


def test_cuda_without_a_gpu_is_a_clear_error_even_on_a_gpu_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^device: cuda was asked for but no GPU is available"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_a_gpu_beyond_the_machines_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match=r"^device: cuda:1 was asked for but there are 1 GPU"):
        resolve_device("cuda:1")


def test_one_rule_everywhere():
    """The trainer and the apps use the same function (no second rule to drift)."""
    import cfrec.apps.pipeline as pipeline
    import cfrec.experiment as experiment
    import cfrec.train.trainer as trainer

    assert trainer.resolve_device is experiment.resolve_device is pipeline.resolve_device is resolve_device
