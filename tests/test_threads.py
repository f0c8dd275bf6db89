"""The thread policy (cfrec/threads.py): precedence, parsing, torch's settings, the apps' config keys."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
import torch

from cfrec import threads
from cfrec.errors import ConfigError
from cfrec.train import TrainConfig


@pytest.fixture(autouse=True)
def keep_torch_threads(monkeypatch: pytest.MonkeyPatch):
    """No CFREC_THREADS from the calling shell; torch's thread count restored after each test."""
    monkeypatch.delenv(threads.ENV, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_precedence_explicit_then_env_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert threads.resolve_threads_with_source(None) == (threads.DEFAULT_THREADS, "default") == (1, "default")
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.resolve_threads_with_source(None) == (3, threads.ENV)
    assert threads.resolve_threads_with_source("auto", "train.threads") == (3, threads.ENV)
    assert threads.resolve_threads_with_source(2, "train.threads") == (2, "train.threads")
    monkeypatch.setenv(threads.ENV, "")
    assert threads.resolve_threads(None) == 1


@pytest.mark.parametrize("value", [0, "0", "all", "ALL"])
def test_zero_and_all_mean_every_usable_cpu(value: object) -> None:
    assert threads.parse_threads(value) == threads.usable_cpus() >= 1


@pytest.mark.parametrize("value", [-1, 1.5, True, "two", "-3", [2]])
def test_bad_values_name_their_key(value: object, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"^train\.threads: "):
        threads.resolve_threads(value, "train.threads")
    monkeypatch.setenv(threads.ENV, str(value))
    if not isinstance(value, (bool, float, list)):  # the environment holds text
        with pytest.raises(ConfigError, match=rf"^{threads.ENV}: "):
            threads.resolve_threads(None)


def test_apply_sets_torch_and_logs_the_choice(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    assert threads.apply_threads(2) == torch.get_num_threads() == 2
    with caplog.at_level(logging.INFO, logger="cfrec.threads"):
        assert threads.configure_threads(None) == torch.get_num_threads() == 1
        monkeypatch.setenv(threads.ENV, "2")
        threads.configure_threads(None)
    assert "torch threads: 1 (default; CFREC_THREADS or threads=N to change)" in caplog.messages
    assert f"torch threads: 2 (from {threads.ENV}; CFREC_THREADS or threads=N to change)" in caplog.messages
    with pytest.raises(ConfigError, match="threads"):
        threads.apply_threads(0)


def test_interop_threads_set_once_per_process() -> None:
    """In a fresh process the first call sets the inter-op count; later calls change only intra-op."""
    code = textwrap.dedent("""
        import torch
        from cfrec.threads import apply_threads
        torch.ones(4) @ torch.ones(4)
        apply_threads(2)
        first = (torch.get_num_threads(), torch.get_num_interop_threads())
        apply_threads(1)
        print(first, (torch.get_num_threads(), torch.get_num_interop_threads()))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    assert out == "(2, 2) (1, 2)"


def test_app_config_train_threads_overrides_top_level() -> None:
    assert threads.run_threads({"threads": 3, "train": {"threads": None}}) == (3, "threads")
    assert threads.run_threads({"threads": 3, "train": {"threads": 2}}) == (2, "train.threads")
    assert threads.run_threads({"threads": None}) == (None, "threads")
    assert threads.configure_run_threads({"threads": None, "train": {"threads": 2}}) == torch.get_num_threads() == 2


def test_train_config_field() -> None:
    assert TrainConfig().threads is None
    assert TrainConfig.from_dict({"threads": 2}).threads == 2
    with pytest.raises(ConfigError, match=r"^threads: "):
        TrainConfig.from_dict({"threads": -2})


def test_train_app_applies_and_logs_train_threads(tmp_path) -> None:
    """cfrec-train with train.threads=2 over threads=1: the run's log names the choice; a bad value stops the run."""
    import os

    tiny = ["data=synthetic", "data.n_users=60", "data.n_items=40", "eval.ks=[5,10]", "data.n_ratings=800", "run.progress=false",
            "model=bias", "run.plots=false", "run.tensorboard=false", "run.build_index=false"]
    env = {k: v for k, v in os.environ.items() if k != threads.ENV}
    done = subprocess.run([sys.executable, "-m", "cfrec.apps.train", *tiny, "threads=1", "train.threads=2",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "run" / "train.log").read_text()
    assert "torch threads: 2 (from train.threads; CFREC_THREADS or train.threads=N to change)" in log
    bad = subprocess.run([sys.executable, "-m", "cfrec.apps.train", *tiny, "threads=many", f"hydra.run.dir={tmp_path / 'bad'}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "threads: must be a positive integer" in bad.stderr + bad.stdout
