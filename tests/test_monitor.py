"""TensorBoard contents of a run: named run folder, final metrics once (HParams), typed hparams,
no constant learning-rate chart."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hp_metadata

from cfrec.apps.pipeline import run
from cfrec.checkpoint import load_train_state
from cfrec.monitor import TensorBoardLogger, run_hparams, run_name

TINY = ["data=synthetic", "data.n_users=120", "data.n_items=80", "data.n_ratings=3000", "run.progress=false",
        "run.plots=false", "run.build_index=false"]


def config(*overrides: str) -> dict:
    with initialize_config_module("cfrec.conf", version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=[*TINY, *overrides]), resolve=True)


def events(folder: Path) -> EventAccumulator:
    (file,) = folder.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(file), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def session_hparams(acc: EventAccumulator) -> dict:
    content = acc.PluginTagToContent(hp_metadata.PLUGIN_NAME)
    assert hp_metadata.EXPERIMENT_TAG not in content  # TensorBoard computes the table from all runs
    start = hp_metadata.parse_session_start_info_plugin_data(content[hp_metadata.SESSION_START_INFO_TAG])
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}


def test_run_name_carries_the_model_and_key_overrides():
    overrides = ["model=cf", "model.rank=32", "data.root=/data/ml-1m", "run.progress=false", "model.l2=0.9"]
    assert run_name("cf", overrides) == "cf data=ml-1m model.rank=32 model.l2=0.9"
    assert run_name("item_knn", ["model=item_knn", "model.k=50"]) == "item_knn model.k=50"
    assert run_name("cf", ["eval.ks=[10,50]", "x=a/b:c"]) == "cf eval.ks=[10,50] x=a_b_c"


def test_a_run_logs_final_metrics_once_in_hparams(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- model.rank=8\n- train.epochs=3\n")
    cfg = config("model.rank=8", "train.epochs=3", "train.schedule=constant", "train.val_fraction=0.1")
    metrics = run(cfg, tmp_path, label="cf")
    folder = tmp_path / "tb" / "cf model.rank=8 train.epochs=3"
    acc = events(folder)
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/loss_data", "train/loss_reg", "valid/rmse", "hparam/rmse", "hparam/recall@50"} <= scalars
    assert not [t for t in scalars if t.startswith("test/")]  # final metrics are not one-point charts
    assert not {"hparam/n_train", "hparam/n_test", "hparam/eval_seconds", "hparam/coverage@10"} & scalars
    assert "train/lr" not in scalars  # a constant learning rate is not charted
    state, _ = load_train_state(tmp_path)
    if "loss_per_rating" in state["history"][-1]:  # the trainer's mean loss per rating, beside the sum
        assert "train/loss_per_rating" in scalars
    assert acc.Scalars("hparam/rmse")[0].value == pytest.approx(metrics["rmse"])
    hparams = session_hparams(acc)
    assert hparams["model"] == "cf" and hparams["model.rank"] == 8 and hparams["data"] == "synthetic"
    assert not [k for k in hparams if k.startswith("data.")]  # no paths or data plumbing
    assert hparams["train.restore_best"] is True  # a boolean, not 1.0
    assert (folder / "projector_config.pbtxt").is_file()


def test_booleans_stay_booleans_and_a_changing_lr_is_charted(tmp_path):
    logger = TensorBoardLogger(tmp_path, "run")
    for epoch, lr in enumerate([0.1, 0.05, 0.025], 1):
        logger.on_epoch_end(epoch, {"epoch": epoch, "loss": 1.0 / epoch, "lr": lr})
    logger.log_hparams({"flag": True, "name": "cf", "rank": 8, "ks": "[10, 50]"}, {"rmse": 0.9, "n_test": 5})
    logger.close()
    acc = events(tmp_path / "run")
    assert session_hparams(acc) == {"flag": True, "name": "cf", "rank": 8.0, "ks": "[10, 50]"}
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx([0.1, 0.05, 0.025])


def test_hparams_of_a_run_are_flat_typed_and_free_of_run_plumbing():
    cfg = config("model=cf", "split=kfold", "split.fold=2")
    flat = run_hparams(cfg, "cf", learned=True)
    assert flat["split.fold"] == 2 and flat["model"] == "cf" and flat["data"] == "synthetic"
    assert not {"train.resume", "train.progress", "train.device", "train.distributed"} & set(flat)
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())
