"""Run folders end to end: reload by raw ids, TensorBoard contents, safe checkpoints, resume,
Ctrl-C, divergence, sweeps and the evaluator's memory budget — all on tiny synthetic data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import cfrec
from cfrec.apps.fitting import RunStopped
from cfrec.apps.pipeline import load_split, prepare, run
from cfrec.checkpoint import TENSORS, load_train_state
from cfrec.data import synthetic
from cfrec.data.split import per_user_split
from cfrec.errors import CfrecError, CheckpointError, ConfigError, UnknownIdError
from cfrec.evaluate import evaluate
from cfrec.io import sha256
from cfrec.models import CollaborativeFiltering

TINY = ["data=synthetic", "data.n_users=120", "data.n_items=80", "data.n_ratings=3000", "run.progress=false"]
CF = ["model=cf", "model.rank=8", "model.l2=2.0", "train.epochs=4", "train.batch_size=512"]


def default_sigint() -> None:
    """In the child: Ctrl-C raises KeyboardInterrupt even when this test runs where SIGINT is
    ignored (a job started in the background inherits SIG_IGN, and Python then never handles it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def config(*overrides: str) -> dict:
    with initialize_config_module("cfrec.conf", version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=[*TINY, *overrides]), resolve=True)


@pytest.fixture(scope="module")
def cf_run(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("cf_run")
    cfg = config(*CF, "train.val_fraction=0.1")
    return run_dir, run(cfg, run_dir, label="cf")


def test_load_reproduces_the_runs_rmse_by_raw_ids(cf_run):
    run_dir, metrics = cf_run
    model = cfrec.load(run_dir)
    _, test = load_split(config(*CF))
    raw_users, raw_items = test.user_map.to_ids(test.users), test.item_map.to_ids(test.items)
    pred = model.predict_many(raw_users, raw_items)
    assert np.sqrt(np.mean((pred - test.values) ** 2)) == pytest.approx(metrics["rmse"], rel=1e-5)
    assert model.predict(raw_users[0], raw_items[0]) == pytest.approx(pred[0])
    with pytest.raises(ConfigError, match="user_id: predict takes one id, got a list; predict_many"):
        model.predict([raw_users[0], raw_users[1]], [raw_items[0], raw_items[1]])


def test_loaded_model_recommends_and_searches_by_raw_ids(cf_run):
    run_dir, _ = cf_run
    model = cfrec.load(run_dir)
    user = int(model.user_map.ids[3])
    top = model.recommend(user, k=5)
    assert list(top.columns) == ["movie_id", "title", "genres", "score"] and len(top) == 5
    seen = set(model.item_map.to_ids(model.checkpoint.seen[3].indices).tolist())
    assert not seen & set(top.movie_id)
    assert top.score.is_monotonic_decreasing
    movie = int(model.item_map.ids[0])
    similar = model.similar_movies(movie, k=4)
    assert len(similar) == 4 and movie not in set(similar.movie_id)
    assert similar.similarity.is_monotonic_decreasing
    assert user not in set(model.similar_users(user, k=3).user_id)
    new = model.fold_in({movie: 5.0, int(model.item_map.ids[1]): 1.0})
    assert movie not in set(new.recommend(k=10).movie_id)
    assert 1.0 <= new.predict(int(model.item_map.ids[2])) <= 5.0


def test_recommend_command_answers_like_the_python_api(cf_run, capsys):
    """cfrec-recommend prints what cfrec.load answers, for each kind of question."""
    from cfrec.apps.recommend import main as recommend

    run_dir, _ = cf_run
    model = cfrec.load(run_dir)
    user, movie, other = int(model.user_map.ids[3]), int(model.item_map.ids[0]), int(model.item_map.ids[1])

    def printed(*args: str) -> str:
        assert recommend([str(run_dir), *args]) == 0
        return capsys.readouterr().out

    def lines(frame) -> list[list[str]]:
        return [row.split() for row in frame.to_string(index=False, float_format=lambda v: f"{v:.4f}").splitlines()]

    assert printed("--user", str(user), "--movie", str(movie)) == f"{model.predict(user, movie):.4f}\n"
    assert [r.split() for r in printed("--user", str(user), "-k", "5").splitlines()] == lines(model.recommend(user, 5))
    assert [r.split() for r in printed("--similar-to", str(movie), "-k", "3").splitlines()] == lines(
        model.similar_movies(movie, 3))
    assert [r.split() for r in printed("--similar-users", str(user), "-k", "3").splitlines()] == lines(
        model.similar_users(user, 3))
    folded = model.fold_in({movie: 5.0, other: 1.0}).recommend(4)
    assert [r.split() for r in printed("--rate", f"{movie}=5", f"{other}=1", "-k", "4").splitlines()] == lines(folded)


def test_min_ratings_lists_the_best_of_the_well_known_movies(cf_run, capsys):
    from cfrec.apps.recommend import main as recommend

    run_dir, _ = cf_run
    model = cfrec.load(run_dir)
    user = int(model.user_map.ids[5])
    counts = model.movie_counts
    floor = int(np.median(counts[counts > 0]))
    code = model.user_map.code(user)
    scores = model.model.score(torch.tensor([code]))[0].detach().numpy()
    allowed = (counts >= floor) & ~np.isin(np.arange(len(counts)), model.checkpoint.seen[code].indices)
    expected = model.item_map.to_ids(np.flatnonzero(allowed)[np.argsort(-scores[allowed], kind="stable")[:6]])
    top = model.recommend(user, k=6, min_ratings=floor)
    assert list(top.movie_id) == list(expected)  # brute force over the allowed movies
    assert (counts[model.item_map.codes(list(top.movie_id))] >= floor).all()
    assert recommend([str(run_dir), "--user", str(user), "-k", "6", "--min-ratings", str(floor)]) == 0
    assert [int(line.split()[0]) for line in capsys.readouterr().out.splitlines()[1:]] == list(expected)
    movie = int(model.item_map.ids[0])
    folded = model.fold_in({movie: 5.0}).recommend(k=20, min_ratings=floor)
    assert (counts[model.item_map.codes(list(folded.movie_id))] >= floor).all() and movie not in set(folded.movie_id)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--user", "987654"], "unknown user id 987654"),
     (["--rate", "5=five"], "--rate takes MOVIE=RATING pairs such as 2571=5, got '5=five'"),
     (["--similar-to", "x"], "'x' is not an id of this model (its ids are integers)"),
     (["--rate", "1=5", "2=3", "1=1"], "--rate rates movie 1 twice (5 and 1): give each movie once")],
)
def test_recommend_command_errors_are_one_line(cf_run, args, message):
    run_dir, _ = cf_run
    done = subprocess.run([sys.executable, "-m", "cfrec.apps.recommend", str(run_dir), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.strip() == f"cfrec-recommend: {message}" and not done.stdout


def test_a_list_emptied_by_min_ratings_says_so(cf_run, capsys):
    from cfrec.apps.recommend import main as recommend
    run_dir, _ = cf_run
    user = int(cfrec.load(run_dir).user_map.ids[0])
    assert recommend([str(run_dir), "--user", str(user), "--min-ratings", "100000"]) == 0
    assert capsys.readouterr().out.strip() == ("no movie to list: none left with 100000 or more training ratings "
                                               "(lower --min-ratings)")


def test_load_takes_the_device_words_of_training(cf_run, monkeypatch):
    run_dir, _ = cf_run
    assert cfrec.load(run_dir, device="auto").predict(1, 1) == cfrec.load(run_dir).predict(1, 1)  # CPU here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device: cuda was asked for but no GPU is available"):
        cfrec.load(run_dir, device="cuda")
    with pytest.raises(ConfigError, match="device: must be"):
        cfrec.load(run_dir, device="gpu")


@pytest.mark.parametrize(("call", "message"), [
    (lambda m: m.recommend([1, 2], k=3), "user_id: recommend takes one id, got a list"),
    (lambda m: m.similar_movies((1, 2)), "movie_id: similar_movies takes one id, got a tuple"),
    (lambda m: m.similar_users(np.array([1])), "user_id: similar_users takes one id, got a ndarray"),
    (lambda m: m.fold_in([(5, 5)]), r"ratings: fold_in takes a \{movie_id: rating\} mapping, got a list"),
    (lambda m: m.predict_many(1, 5), "user_ids: predict_many takes a sequence of ids, got 1"),
    (lambda m: m.predict_many(np.array([[1, 2]]), np.array([[5, 6]])), "user_ids: predict_many takes flat sequences"),
])
def test_ids_of_the_wrong_shape_are_clear_errors(cf_run, call, message):
    with pytest.raises(ConfigError, match=message):
        call(cfrec.load(cf_run[0]))


def test_a_movie_without_training_ratings_has_no_similar_movies(cf_run):
    model = cfrec.load(cf_run[0])
    movie = int(model.item_map.ids[3])
    assert len(model.similar_movies(movie, k=3)) == 3
    counts = model.movie_counts.copy()
    counts[3] = 0  # as if all its ratings had gone to the test split
    model.__dict__["movie_counts"] = counts
    with pytest.raises(CfrecError, match=f"movie {movie} has no training ratings: this model never learned its vector"):
        model.similar_movies(movie, k=3)


def test_unknown_ids_raise_or_fall_back_to_biases(cf_run):
    run_dir, _ = cf_run
    strict = cfrec.load(run_dir)
    with pytest.raises(UnknownIdError, match="unknown user id 987654"):
        strict.predict(987654, int(strict.item_map.ids[0]))
    with pytest.raises(KeyError, match="unknown item id 55555"):
        strict.similar_movies(55555)
    lenient = cfrec.load(run_dir, unknown="fallback")
    state = lenient.model.state()
    movie = int(lenient.item_map.ids[2])
    expected = float(state["mean"] + state["item_bias"][2])
    assert lenient.predict(987654, movie) == pytest.approx(np.clip(expected, 1, 5), rel=1e-5)


def test_tensorboard_events_hold_the_expected_tags(cf_run):
    run_dir, _ = cf_run
    tags = {"scalars": set(), "histograms": set()}
    for events in (run_dir / "tb").rglob("events.out.tfevents.*"):  # tb/<run name>/
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "histograms": 0})
        acc.Reload()
        for kind in tags:
            tags[kind] |= set(acc.Tags()[kind])
    for tag in ["train/loss", "train/loss_data", "train/loss_reg", "train/lr", "train/grad_norm",
                "valid/rmse", "valid/accuracy", "hparam/recall@10", "hparam/rmse"]:
        assert tag in tags["scalars"], tag
    assert {"params/theta", "params/x", "params/user_bias", "params/item_bias"} <= tags["histograms"]
    assert len(list((run_dir / "tb").rglob("projector_config.pbtxt"))) == 1


class Payload:
    """Any Python object: a checkpoint must never unpickle one."""


def test_a_checkpoint_carrying_a_pickled_object_is_refused(cf_run, tmp_path):
    run_dir, _ = cf_run
    for name in ("model.pt", "model.json"):
        (tmp_path / name).write_bytes((run_dir / name).read_bytes())
    torch.save({"model.theta": Payload()}, tmp_path / TENSORS)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["sha256"] = sha256(tmp_path / TENSORS)  # a consistent, deliberate forgery
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a plain-tensor checkpoint"):
        cfrec.load(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "flip", "version"])
def test_damaged_checkpoints_are_clear_errors(cf_run, tmp_path, damage):
    run_dir, _ = cf_run
    for name in ("model.pt", "model.json"):
        (tmp_path / name).write_bytes((run_dir / name).read_bytes())
    tensors = bytearray((tmp_path / TENSORS).read_bytes())
    if damage == "truncate":
        (tmp_path / TENSORS).write_bytes(tensors[: len(tensors) // 2])
    elif damage == "flip":
        tensors[len(tensors) // 2] ^= 0xFF
        (tmp_path / TENSORS).write_bytes(tensors)
    else:
        meta = json.loads((tmp_path / "model.json").read_text())
        (tmp_path / "model.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(CheckpointError, match="checksum|version 99"):
        cfrec.load(tmp_path)


def trained_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / TENSORS, weights_only=True)


def test_ctrl_c_saves_state_and_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    long = [*CF, "train.schedule=constant", "train.lr=0.002", "run.plots=false", "run.build_index=false",
            "run.tensorboard=false"]
    straight = tmp_path / "straight"
    run(config(*long, "train.epochs=40"), straight)
    first = tmp_path / "first"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    # far more epochs than it will run, so the Ctrl-C lands in training however slow the machine is;
    # the resume below may change the number of epochs (the schedule is constant)
    args = [sys.executable, "-m", "cfrec.apps.train", *TINY, *long, "train.epochs=100000", f"hydra.run.dir={first}"]
    process = subprocess.Popen(args, cwd=tmp_path, env=env, preexec_fn=default_sigint, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = first / "train_state.pt"
    deadline = time.time() + 120
    while not state.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "interrupted: the state after epoch" in output and f"train.resume={first}" in output
    saved, _ = load_train_state(first)
    assert 1 <= saved["epoch"] < 40
    resumed = tmp_path / "resumed"
    run(config(*long, "train.epochs=40", f"train.resume={first}"), resumed)
    for name, tensor in trained_tensors(straight).items():
        if name.startswith("model."):
            assert torch.equal(tensor, trained_tensors(resumed)[name]), name


def test_resume_refuses_another_model(tmp_path, cf_run):
    run_dir, _ = cf_run
    with pytest.raises(ConfigError, match="train.resume: .* trained another model"):
        run(config(*CF, "model.rank=9", f"train.resume={run_dir}"), tmp_path)


def test_divergence_stops_with_a_message_and_keeps_the_last_good_state(tmp_path, caplog):
    cfg = config(*CF, "train.optimizer=sgd", "train.lr=300", "train.epochs=30", "train.batch_size=null")
    with pytest.raises(RunStopped) as stopped:
        run(cfg, tmp_path)
    assert stopped.value.code == 1
    assert "training diverged in epoch" in caplog.text and "Lower train.lr" in caplog.text
    if (tmp_path / "train_state.pt").exists():  # diverged after at least one good epoch
        state, _ = load_train_state(tmp_path)
        assert all(torch.isfinite(t).all() for t in state["model"].values())
        assert "the last good state" in caplog.text
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["model=cf", "model.rank=-3"], "model.rank"),
        (["model=user_knn", "model.k=500"], "model.k"),
        (["model=user_knn", "model.neighbors=hnsw", "+model.hnsw={ef: 10}", "model.k=50"], "model.hnsw"),
        (["model=bias", "eval.tolerance=-1"], "eval.tolerance"),
        (["model=cf", "train.epochs=0"], "epochs"),
    ],
)
def test_config_errors_name_the_key_before_fitting(tmp_path, overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run(config(*overrides), tmp_path)
    assert not (tmp_path / "metrics.json").exists()


def test_data_folder_without_ratings_names_the_key(tmp_path):
    with initialize_config_module("cfrec.conf", version_base="1.3"):
        cfg = OmegaConf.to_container(compose("config", overrides=["data=movielens", f"data.root={tmp_path}"]))
    with pytest.raises(ConfigError, match="data.root: .*no MovieLens ratings file"):
        prepare(cfg)


def test_multirun_sweep_writes_one_folder_per_job_and_a_summary(tmp_path):
    sweep = tmp_path / "sweep"
    done = subprocess.run(
        [sys.executable, "-m", "cfrec.apps.train", "-m", *TINY, "model=bias", "model.reg_user=0.5,50",
         "run.plots=false", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env={**os.environ, "MPLBACKEND": "Agg"}, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    jobs = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert jobs == ["0", "1"]
    summary = (sweep / "summary.csv").read_text().splitlines()
    rmse = [json.loads((sweep / j / "metrics.json").read_text())["rmse"] for j in jobs]
    assert len(summary) == 3 and summary[1].startswith(jobs[int(np.argmin(rmse))] + ",")
    assert (sweep / "summary.md").read_text().startswith("| job | overrides |")


def test_ranking_stays_within_the_memory_budget():
    """A catalog whose dense score matrix (400 × 3,000 floats = 4.8 MB) exceeds a 0.5 MB budget."""
    data = synthetic(n_users=400, n_items=3000, n_ratings=20_000, seed=5)
    train, test = per_user_split(data.ratings, test_ratio=0.2)
    model = CollaborativeFiltering(rank=4).fit(train, config={"epochs": 1, "progress": False})
    blocks = []
    score = model.score

    def recording_score(users):
        out = score(users)
        blocks.append(out.numel() * out.element_size())
        return out

    model.score = recording_score
    budget_mb = 0.5
    bounded = evaluate(model, train, test, ks=(10,), memory_budget_mb=budget_mb)
    assert len(blocks) > 1 and max(blocks) * 3 <= budget_mb * 2**20
    unbounded = evaluate(model, train, test, ks=(10,), memory_budget_mb=1024)
    assert bounded["recall@10"] == pytest.approx(unbounded["recall@10"])
