"""Data-parallel training (``train.distributed``): shards, torchrun jobs of 2 CPU ranks (gloo), the app.

Tolerance. Each rank computes J's terms on its part of the very batch one process would use,
so data-parallel and single-process training take the same steps up to the order in which
floats are added: per batch, the shards' losses and gradients sum to the single-process ones
within float32 round-off (rtol 1e-5); after training, parameters agree within rtol 1e-4,
atol 1e-5 — the tolerance of the dense-vs-index layout test, two other summation orders of
the same J (Adam's normalised steps carry round-off along; measured worst case 8e-6).
Mini-batches need no statistical tolerance: their global batch sequence is the single-process one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import cfrec
from cfrec.apps.pipeline import prepare
from cfrec.errors import ConfigError, TrainingDiverged
from cfrec.models import CollaborativeFiltering
from cfrec.train.batches import choose_layout
from cfrec.train.distributed import TORCHRUN_ENV, Shard
from distributed_worker import CASES, data, fit

ROOT = Path(cfrec.__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distributed_worker.py")
TINY = ["data=synthetic", "data.n_users=120", "data.n_items=80", "data.n_ratings=3000", "run.progress=false"]


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2 ARGS`` (a free port of its own), importing this checkout."""
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for name in TORCHRUN_ENV:
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done


def loss_and_gradient(model: CollaborativeFiltering, batch) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    terms = model(batch)
    terms.total.backward()
    result = {"data": terms.data.detach(), "reg": terms.reg.detach()}
    result.update({name: p.grad.clone() for name, p in model.named_parameters()})
    return result


OBJECTIVES = {"squared": "squared", "weighted": {"name": "weighted", "w0": 0.1},
              "joint": {"name": "joint", "rank": 3}, "bpr": {"name": "bpr", "negatives": 2, "candidates": 3}}


@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("batch_size", [None, 2000])
@pytest.mark.parametrize("layout", ["dense", "index"])
def test_shards_add_up_to_the_single_process_batches(layout: str, batch_size: int | None, objective: str) -> None:
    """Three shards deal, step for step, parts of the one-process batch whose losses and gradients
    add up to its own: the data term over the ratings, the penalty counted once (BPR: the same
    sampled negatives on every shard as in one process)."""
    if objective == "bpr" and layout == "dense":
        pytest.skip("bpr trains on the index layout only")
    train = data()
    model = CollaborativeFiltering(rank=4, objective=OBJECTIVES[objective])
    model.prepare(train, torch.Generator().manual_seed(0), torch.device("cpu"))
    whole = choose_layout(layout, train, "cpu", 1 << 25, batch_size)
    shards = [choose_layout(layout, train, "cpu", 1 << 25, batch_size, Shard(rank, 3)) for rank in range(3)]
    assert [s.n_ratings for s in shards] == [len(train)] * 3 and sum(s.n_held for s in shards) == len(train)
    dealt = [model.training_batches(shard, batch_size, torch.Generator().manual_seed(5)) for shard in shards]
    steps = 0
    for batch in model.training_batches(whole, batch_size, torch.Generator().manual_seed(5)):
        parts = [loss_and_gradient(model, next(deal)) for deal in dealt]
        expected = loss_and_gradient(model, batch)
        for key, value in expected.items():  # float32 round-off of sums in another order, at the tensor's scale
            scale = max(1.0, float(value.abs().max()))
            torch.testing.assert_close(sum(part[key] for part in parts), value, rtol=1e-5, atol=1e-5 * scale, msg=key)
        steps += 1
    assert steps == whole.n_batches(batch_size) and all(next(deal, None) is None for deal in dealt)


@pytest.fixture(scope="module")
def data_parallel(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every case of `distributed_worker.CASES` trained by one torchrun job of 2 ranks."""
    folder = tmp_path_factory.mktemp("ddp")
    torchrun(str(WORKER), str(folder / "results.pt"), cwd=folder)
    return torch.load(folder / "results.pt", weights_only=True)


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_train_what_one_process_trains(data_parallel: dict, name: str) -> None:
    model = fit(name, distributed=False)
    got = data_parallel[name]
    assert got["state"].keys() == model.state().keys()
    for key, value in model.state().items():  # equal up to float32 round-off at the tensor's scale
        scale = float(value.abs().max()) if value.numel() else 1.0
        torch.testing.assert_close(got["state"][key], value, rtol=1e-4, atol=max(1e-5, 1e-4 * scale), msg=key)
    assert len(got["history"]) == len(model.history)  # early stopping stopped both after the same epoch
    for ours, theirs in zip(model.history, got["history"]):
        for key in ("loss_data", "loss_reg", "grad_norm", "val_rmse", "val_ndcg@10"):
            if key in ours:
                assert theirs[key] == pytest.approx(ours[key], rel=1e-5), key


def test_every_rank_stops_when_one_asks(data_parallel: dict) -> None:
    assert data_parallel["stopped_by_rank_1"] == 2


def test_every_rank_raises_at_the_step_one_process_diverges(data_parallel: dict) -> None:
    with pytest.raises(TrainingDiverged) as single:
        fit("diverges", distributed=False)
    where = str(single.value).split(":")[0]  # "training diverged in epoch E, step S"
    assert data_parallel["diverges"].split(":")[0] == where


def test_metrics_from_rank_0_reach_every_rank_exactly(data_parallel: dict) -> None:
    """`from_main` (validation metrics): floats to the last bit, NaN and inf included, on rank 1 too."""
    assert data_parallel["from_main_exact"] is True


def test_app_under_torchrun_writes_one_run_folder(tmp_path: Path) -> None:
    """No hydra.run.dir: rank 0 writes runs/<date>/<time>, rank 1 nothing at all."""
    done = torchrun("-m", "cfrec.apps.train", *TINY, "model=cf", "model.rank=4", "train.epochs=2",
                    "train.batch_size=500", "train.distributed=true", "run.plots=false", cwd=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    runs = [p for p in (tmp_path / "runs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    run = runs[0]
    for name in ["metrics.json", "model.pt", "model.json", "train.log", ".hydra/config.yaml", "items.hnsw", "users.hnsw"]:
        assert (run / name).is_file(), name
    assert list((run / "tb").rglob("events.out.tfevents.*"))
    assert json.loads((run / "metrics.json").read_text())["rmse"] < 1.2
    log = (run / "train.log").read_text()
    assert "rank 0 of 2" in log and "rank 1 of 2" not in log, log
    assert "rank 1" not in done.stdout  # the other rank logs warnings only


def test_distributed_outside_torchrun_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="^distributed: true needs a process started by torchrun"):
        CollaborativeFiltering(rank=2).fit(data(), {"distributed": True, "epochs": 1})
    with pytest.raises(ConfigError, match="^distributed: must be true or false"):
        CollaborativeFiltering(rank=2).fit(data(), {"distributed": "yes"})


def composed(*overrides: str, hydra: bool = False):
    with initialize_config_module("cfrec.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


@pytest.mark.parametrize(
    "overrides, world_size, message",
    [
        (["model=cf", "train.distributed=true"], None, "true needs a process started by torchrun"),
        (["model=bias", "train.distributed=true"], None, "model 'bias' is not trained by gradient descent"),
        (["model=cf"], "2", "false, but torchrun started 2 processes"),
    ],
)
def test_app_checks_the_launch_before_any_work(monkeypatch: pytest.MonkeyPatch, overrides, world_size, message) -> None:
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    if world_size:
        monkeypatch.setenv("WORLD_SIZE", world_size)
    cfg = OmegaConf.to_container(composed(*TINY, *overrides))
    with pytest.raises(ConfigError, match=f"^train\\.distributed: {message}"):
        prepare(cfg)


@pytest.mark.parametrize("rank", ["0", "1"])
def test_only_rank_zero_gets_a_run_folder_and_a_log_file(monkeypatch: pytest.MonkeyPatch, rank: str) -> None:
    monkeypatch.setenv("RANK", rank)
    cfg = composed(hydra=True).hydra
    OmegaConf.update(cfg, "runtime.output_dir", "/somewhere/runs/x")  # Hydra sets it when a job starts
    logging = cfg.job_logging
    if rank == "0":
        assert cfg.run.dir.startswith("runs/") and cfg.output_subdir == ".hydra"
        assert logging.root.level == "INFO" and logging.handlers.file.filename.startswith("/somewhere/runs/x/")
    else:
        assert cfg.run.dir == "." and cfg.output_subdir is None
        assert logging.root.level == "WARNING" and logging.handlers.file.filename == os.devnull
