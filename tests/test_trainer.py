"""The training loop: config validation, determinism, layouts, resume, divergence, early stopping, callbacks."""

from __future__ import annotations

import pytest
import torch

from cfrec.data import Split
from cfrec.errors import ConfigError, TrainingDiverged
from cfrec.models import CollaborativeFiltering
from cfrec.train import TrainConfig, Trainer

FAST = {"epochs": 6, "batch_size": 2000, "lr": 0.02}


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a: dict, b: dict, **tol) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if tol:
            torch.testing.assert_close(a[key], b[key], **tol)
        else:
            assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(
    "options, key",
    [
        ({"lr": 0}, "lr"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"epochs": 2.5}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"layout": "sparse"}, "layout"),
        ({"device": "tpu"}, "device"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"patience": 3, "val_fraction": 0.0}, "patience"),  # early stopping on val_rmse without a validation slice
        ({"learning_rate": 0.1}, "learning_rate"),  # unknown key
        ({"reuse_memory": "yes"}, "reuse_memory"),
        ({"gramian_precision": "half"}, "gramian_precision"),
    ],
)
def test_config_errors_name_the_key(options: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key}:") as info:
        TrainConfig.from_dict(options)
    assert info.value.key == key


def test_model_options_are_validated() -> None:
    for options, key in (({"rank": 0}, "rank"), ({"l2": -1.0}, "l2"), ({"w0": 2.0}, "w0"), ({"init_scale": -0.1}, "init_scale")):
        with pytest.raises(ConfigError, match=f"^{key}:"):
            CollaborativeFiltering(**options)


def test_seeded_training_is_repeatable(small_split: Split) -> None:
    a = CollaborativeFiltering(rank=6).fit(small_split.train, {**FAST, "seed": 3})
    b = CollaborativeFiltering(rank=6).fit(small_split.train, {**FAST, "seed": 3})
    c = CollaborativeFiltering(rank=6).fit(small_split.train, {**FAST, "seed": 4})
    assert_same(params(a), params(b))
    assert not torch.equal(a.theta, c.theta)


def test_reusing_freed_memory_changes_no_parameter(small_split: Split) -> None:
    """`train.reuse_memory` moves where tensors live, never what they hold (the joint default model)."""
    fits = [CollaborativeFiltering(rank=6).fit(small_split.train, {**FAST, "reuse_memory": reuse}) for reuse in (True, False)]
    assert_same(params(fits[0]), params(fits[1]))


def test_the_gramian_precision_reaches_the_weighted_head_and_only_it(small_split: Split) -> None:
    """The default model's preference head moves by bfloat16 rounding; its rating head not at all."""
    full, low = (CollaborativeFiltering(rank=6).fit(small_split.train, {**FAST, "gramian_precision": precision})
                 for precision in ("full", "bfloat16"))
    assert_same({"theta": low.theta, "x": low.x}, {"theta": full.theta, "x": full.x})
    moved = float((low.pref_users - full.pref_users).norm() / full.pref_users.norm())
    assert 0 < moved < 0.05
    assert abs(low.history[-1]["val_ndcg@10"] - full.history[-1]["val_ndcg@10"]) < 0.05


@pytest.mark.parametrize("w0", [None, 0.1])
def test_dense_and_index_layouts_train_the_same_parameters(small_split: Split, w0: float | None) -> None:
    """Full-batch gradient descent from one seed: both layouts take the same steps."""
    options = {"epochs": 15, "batch_size": None, "lr": 0.02, "seed": 1}
    objective = "squared" if w0 is None else {"name": "weighted", "w0": w0}
    dense = CollaborativeFiltering(rank=5, objective=objective).fit(small_split.train, {**options, "layout": "dense"})
    index = CollaborativeFiltering(rank=5, objective=objective).fit(small_split.train, {**options, "layout": "index"})
    for a, b in zip(dense.history, index.history):
        assert a["loss_data"] == pytest.approx(b["loss_data"], rel=1e-5)
        assert a["loss_reg"] == pytest.approx(b["loss_reg"], rel=1e-5)
    assert_same(params(dense), params(index), rtol=1e-4, atol=1e-5)


RESUME_CASES = {  # id: (training options, objective)
    "dense-squared": ({"layout": "dense"}, "squared"), "index-squared": ({"layout": "index"}, "squared"),
    "dense-joint": ({"layout": "dense"}, "joint"), "index-joint": ({"layout": "index"}, "joint"),
    "index-bpr": ({"layout": "index"}, "bpr"),
    "index-joint-bfloat16": ({"layout": "index", "gramian_precision": "bfloat16"}, "joint"),
    "sparse_adam-joint": ({"layout": "index", "optimizer": "sparse_adam", "batch_size": 2000}, "joint"),
    "als-joint": ({"optimizer": "als"}, "joint"),
    "als-weighted-fold_back": ({"optimizer": "als", "fold_back": 1}, "weighted"),
    "sparse_adam-joint-fold_back": ({"layout": "index", "optimizer": "sparse_adam", "batch_size": 2000, "fold_back": 2},
                                    "joint"),
}


@pytest.mark.parametrize("options, objective", list(RESUME_CASES.values()), ids=list(RESUME_CASES))
def test_resume_ends_with_identical_parameters(small_split: Split, options: dict, objective: str) -> None:
    """Interrupted after epoch 3 and resumed: bit-identical to one straight run (BPR's negatives
    come from the trainer's generator, which the saved state carries; row-sparse Adam's moments and
    ALS's closed-form sweeps resume as the gradient optimizers do)."""
    config = TrainConfig.from_dict({**FAST, "schedule": "cosine", "val_fraction": 0.1, **options})
    straight = CollaborativeFiltering(rank=6, objective=objective)
    Trainer(config).fit(straight, small_split.train)

    saved: dict = {}

    def save_and_stop(epoch: int, metrics: dict, model) -> bool:
        # saved after every epoch as cfrec.apps.fitting saves train_state.pt: before fit() ends and
        # restore_best rewinds the parameters to the best epoch so far
        saved.update(first.state_dict())
        return epoch == 3  # interrupted after epoch 3

    first = Trainer(config, callbacks=[save_and_stop])
    first.fit(CollaborativeFiltering(rank=6, objective=objective), small_split.train)
    assert first.epoch == 3 and saved["epoch"] == 3
    resumed_model = CollaborativeFiltering(rank=6, objective=objective)
    second = Trainer(config)
    second.load_state_dict(saved)
    second.fit(resumed_model, small_split.train)
    assert second.epoch == config.epochs and len(second.history) == config.epochs
    assert_same(params(straight), params(resumed_model))


def test_divergence_raises_and_keeps_finite_parameters(small_split: Split) -> None:
    model = CollaborativeFiltering(rank=4, bias=False, init_scale=1.0)
    with pytest.raises(TrainingDiverged, match="diverged in epoch"):
        model.fit(small_split.train, {"optimizer": "sgd", "lr": 1e4, "batch_size": None, "epochs": 50})
    assert torch.isfinite(model.theta).all() and torch.isfinite(model.x).all()


def test_early_stopping_restores_the_best_epoch(small_split: Split) -> None:
    """An over-fitting setting: validation RMSE turns up; training stops and rewinds to the best epoch."""
    model = CollaborativeFiltering(rank=16, l2=0.0, init_scale=0.3, knn_blend=None)  # the factors alone
    options = {"epochs": 60, "batch_size": None, "lr": 0.05, "val_fraction": 0.2, "patience": 3}
    model.fit(small_split.train, options)
    val = [h["val_rmse"] for h in model.history]
    best = min(range(len(val)), key=val.__getitem__)
    assert len(val) == best + 1 + 3 < 60  # stopped three epochs after the best
    trainer_config = TrainConfig.from_dict(options)
    fit_part, split = Trainer(trainer_config)._carve_validation(small_split.train)
    measured = model.validation_metrics(fit_part, split, torch.device("cpu"))["val_rmse"]
    assert measured == pytest.approx(val[best], rel=1e-6)


@pytest.mark.parametrize("objective, keys, monitor", [
    ("squared", {"val_rmse", "val_mae", "val_accuracy"}, "val_rmse"),
    ("weighted", {"val_recall@10", "val_recall@50", "val_ndcg@10", "val_ndcg@50"}, "val_ndcg@10"),
    ("bpr", {"val_recall@10", "val_recall@50", "val_ndcg@10", "val_ndcg@50"}, "val_ndcg@10"),
    ("joint", {"val_rmse", "val_mae", "val_accuracy", "val_recall@10", "val_recall@50", "val_ndcg@10", "val_ndcg@50"},
     "val_rmse"),
])
def test_validation_measures_what_the_objective_is_for(small_split: Split, objective, keys, monitor) -> None:
    """Every objective validates on the default 2 % slice: ratings by RMSE, rankings by Recall/NDCG,
    never a rating error for scores that are not ratings; ``monitor=auto`` follows the objective."""
    assert TrainConfig().val_fraction == 0.02
    model = CollaborativeFiltering(rank=4, objective=objective).fit(small_split.train, {**FAST, "epochs": 2})
    assert all({k for k in row if k.startswith("val_")} == keys for row in model.history)
    assert model.monitor == monitor and set(model.validation_keys) == keys


def test_monitor_must_be_measured_and_maximised_metrics_pick_the_highest(small_split: Split) -> None:
    with pytest.raises(ConfigError, match="^train.monitor: val_rmse is not measured"):
        CollaborativeFiltering(rank=4, objective="bpr").fit(small_split.train, {**FAST, "monitor": "val_rmse"})
    trainer = Trainer(TrainConfig.from_dict({**FAST, "epochs": 4, "lr": 0.2}))
    trainer.fit(CollaborativeFiltering(rank=4, objective="weighted"), small_split.train)
    ndcg = [row["val_ndcg@10"] for row in trainer.history]
    assert trainer.best["value"] == max(ndcg) and trainer.best["epoch"] == ndcg.index(max(ndcg)) + 1


def test_callbacks_get_every_epoch_and_can_stop(small_split: Split) -> None:
    seen: list[tuple[int, dict]] = []

    def callback(epoch, metrics, model):
        seen.append((epoch, metrics))
        assert isinstance(model, CollaborativeFiltering)
        return epoch == 4

    CollaborativeFiltering(rank=4).fit(small_split.train, {**FAST, "epochs": 10, "val_fraction": 0.1}, callbacks=[callback])
    assert [e for e, _ in seen] == [1, 2, 3, 4]
    keys = {"epoch", "loss", "loss_data", "loss_reg", "lr", "grad_norm", "seconds", "val_rmse", "val_mae", "val_accuracy"}
    assert keys <= seen[0][1].keys()
    assert seen[0][1]["loss"] == pytest.approx(seen[0][1]["loss_data"] + seen[0][1]["loss_reg"])
    assert seen[-1][1]["loss"] < seen[0][1]["loss"]


def test_cuda_request_without_cuda_is_a_config_error(small_split: Split) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="^device:"):
        CollaborativeFiltering(rank=2).fit(small_split.train, {"device": "cuda", "epochs": 1})


def test_a_trainer_fits_afresh_each_time(small_split: Split) -> None:
    trainer = Trainer(TrainConfig.from_dict(FAST))
    first = params(trainer.fit(CollaborativeFiltering(rank=4), small_split.train))
    second = params(trainer.fit(CollaborativeFiltering(rank=4), small_split.train))
    assert len(trainer.history) == FAST["epochs"]
    assert_same(first, second)


@pytest.mark.parametrize("n_ratings, options, expected", [
    (884_769, {}, 16384),  # MovieLens 1M: 55 steps of the default batch, between min_batches and max_batches
    (22_572_737, {}, 352_700),  # ML-25M-sized: at most 64 steps (ceil(n / 64))
    (22_572_737, {"max_batches": None}, 16384),
    (90_000, {}, 1800),  # ten times smaller than ML-1M: at least 50 steps
    (10_000, {}, 1024),  # never below 1,024 ratings
    (5_000_000, {"batch_size": None}, None),  # full batch stays full batch
    (1_000_000, {"min_batches": 10, "max_batches": 10}, 100_000),
])
def test_batch_size_keeps_steps_per_epoch_between_min_and_max(n_ratings: int, options: dict, expected) -> None:
    assert TrainConfig.from_dict(options).effective_batch_size(n_ratings) == expected


def test_max_batches_below_min_batches_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"max_batches.*below min_batches \(50\)"):
        TrainConfig.from_dict({"max_batches": 20})


def test_the_trainer_steps_at_most_max_batches_times_an_epoch(small_split: Split) -> None:
    config = TrainConfig.from_dict({"epochs": 1, "batch_size": 100, "min_batches": 3, "max_batches": 4,
                                    "val_fraction": 0.0, "progress": False})
    steps = []
    trainer = Trainer(config)
    model = CollaborativeFiltering(rank=3)
    model.register_forward_hook(lambda *args: steps.append(1))
    trainer.fit(model, small_split.train)
    assert len(steps) == 4 and trainer.batch_size == -(-len(small_split.train) // 4)
