"""The apps never mix, lose or hide work: one run per folder, sweeps and comparisons that keep
the jobs that finished, every option checked before the data is read, one-line errors, resumes
that refuse what cannot continue. Real apps in subprocesses on tiny synthetic data."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from cfrec.apps import rundir
from cfrec.apps.checks import DENSE_LIMIT_BYTES, check_against_data
from cfrec.apps.fitting import launcher
from cfrec.apps.pipeline import prepare, run
from cfrec.data import Split, synthetic
from cfrec.data.split import per_user_split
from cfrec.errors import ConfigError
from cfrec.evaluate import evaluate, score_blocks, user_batch_size
from cfrec.io import write_json
from cfrec.models import BiasBaseline, CollaborativeFiltering, UserKNN

CONF = Path(__file__).resolve().parents[1] / "cfrec" / "conf"
TINY = ["data=synthetic", "data.n_users=120", "data.n_items=80", "data.n_ratings=3000", "run.progress=false"]
QUICK = [*TINY, "model=bias", "run.plots=false", "run.tensorboard=false"]
CF = ["model=cf", "model.rank=4", "train.epochs=2", "train.batch_size=512", "run.plots=false",
      "run.build_index=false", "run.tensorboard=false"]


def default_sigint() -> None:
    """In the child: Ctrl-C raises KeyboardInterrupt even when this test runs where SIGINT is
    ignored (a job started in the background inherits SIG_IGN, and Python then never handles it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def config(*overrides: str, name: str = "config") -> dict:
    with initialize_config_module("cfrec.conf", version_base="1.3"):
        return OmegaConf.to_container(compose(name, overrides=list(overrides)), resolve=True)


def one_line_error(done: subprocess.CompletedProcess, app: str = "cfrec-train") -> str:
    """The error line of a failed app; asserts it is the only stderr line and no traceback was shown."""
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{app}: "), done.stderr
    return lines[0]


# -- 1. one run per folder ------------------------------------------------------------------------
def test_a_run_prints_its_folder_and_a_used_folder_is_refused_and_left_as_it_was(tmp_path):
    folder = tmp_path / "run"
    first = cli("cfrec.apps.train", *QUICK, f"hydra.run.dir={folder}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    tail = first.stdout.strip().splitlines()[-3:]  # issue 14: the run ends with its main metrics and folder
    metrics = json.loads((folder / "metrics.json").read_text())
    assert tail[0].split()[:3] == ["model", "rmse", "mae"] and tail[1].split()[:2] == ["bias", f"{metrics['rmse']:.4f}"]
    assert tail[2] == f"run folder: {folder}" and not (folder / "FAILED").exists()
    before = {p.name: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    overrides = (folder / ".hydra" / "overrides.yaml").read_text()
    second = cli("cfrec.apps.train", *QUICK, "model.reg_user=3", f"hydra.run.dir={folder}", cwd=tmp_path)
    assert f"hydra.run.dir: {folder} already holds another run's files" in one_line_error(second)
    assert (folder / ".hydra" / "overrides.yaml").read_text() == overrides  # the first run's, untouched
    assert {p.name: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == before


def test_a_folder_being_written_is_refused(tmp_path):
    folder = tmp_path / "busy"
    rundir.lock(folder, "hydra.run.dir")  # this process writes it
    try:
        done = cli("cfrec.apps.train", *QUICK, f"hydra.run.dir={folder}", cwd=tmp_path)
        assert "is being written by another run (pid" in one_line_error(done)
        assert not (folder / ".hydra").exists()
    finally:
        rundir.release(folder)


def test_resume_in_place_removes_the_old_runs_derived_files(tmp_path):
    folder = tmp_path / "run"
    run(config(*TINY, *CF, "run.build_index=true"), folder)
    (folder / "FAILED").write_text("stale\n")
    (folder / "old.png").write_text("stale")
    assert rundir.used(folder)
    rundir.claim(folder, "hydra.run.dir", resume=str(folder))  # allowed: continues this run
    rundir.release(folder)
    assert not (folder / "FAILED").exists()  # the claim drops an earlier attempt's error
    removed = rundir.clear_derived(folder)
    assert {"metrics.json", "items.hnsw", "items.hnsw.json", "old.png"} <= set(removed)
    assert (folder / "train_state.pt").is_file() and (folder / "model.pt").is_file()  # the state may refer to it
    metrics = run(config(*TINY, *CF, "train.epochs=3", f"train.resume={folder}"), folder)  # continues in place
    assert metrics["epochs_run"] == 3 and (folder / "metrics.json").is_file()
    with pytest.raises(ConfigError, match="already holds another run's files"):
        rundir.claim(folder, "hydra.run.dir", resume=str(tmp_path / "elsewhere"))


def test_a_folder_whose_run_failed_before_any_result_may_be_reused(tmp_path):
    folder = tmp_path / "run"
    (folder / ".hydra").mkdir(parents=True)
    (folder / "train.log").write_text("...")
    (folder / "FAILED").write_text("train.lr: must be a positive number, got -1\n")
    assert not rundir.used(folder)
    rundir.claim(folder, "hydra.run.dir")
    rundir.release(folder)
    assert not (folder / "FAILED").exists()
    (folder / "metrics.json").write_text("{}")
    assert rundir.used(folder)


# -- 2. sweeps keep their other jobs ----------------------------------------------------------------
def test_a_failing_sweep_job_is_reported_and_the_others_finish(tmp_path):
    sweep = tmp_path / "sweep"
    done = cli("cfrec.apps.train", "-m", *QUICK, "model.reg_user=0.5,-1,50", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert "job 1: model.reg_user: must be a number >= 0, got -1.0" in done.stderr
    assert (sweep / "0" / "metrics.json").is_file() and (sweep / "2" / "metrics.json").is_file()
    assert (sweep / "1" / "FAILED").read_text().strip() == "model.reg_user: must be a number >= 0, got -1.0"
    summary = {row["job"]: row for row in _csv(sweep / "summary.csv")}
    assert [summary[j]["status"] for j in ("0", "1", "2")] == ["ok", "failed", "ok"]
    assert "model.reg_user: must be a number >= 0" in summary["1"]["error"]
    assert f"run folder: {sweep}" in done.stdout  # the sweep ends by printing its table and folder


def _csv(path: Path) -> list[dict]:
    import pandas as pd

    return pd.read_csv(path, dtype=str, keep_default_na=False).to_dict("records")


# -- 3. cfrec-compare: train.* applies, a failing model is kept as failed -------------------------------
def test_compare_applies_train_options_and_keeps_the_models_that_finish(tmp_path):
    folder = tmp_path / "compare"
    done = cli("cfrec.apps.compare", *TINY, "compare.only=[bias,cf,popularity]", "model.rank=4", "train.epochs=3",
               "train.lr=1e9", "train.batch_size=null", "compare.head=0", f"hydra.run.dir={folder}", cwd=tmp_path)
    line = one_line_error(done, "cfrec-compare")
    assert "1 of 3 models failed (cf: training diverged" in line  # the huge train.lr reached cf
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["cf"]["status"] == "failed" and "Lower train.lr" in metrics["cf"]["error"]
    assert metrics["bias"]["status"] == "ok" and metrics["bias"]["rmse"] > 0
    table = _csv(folder / "comparison.csv")
    assert [(r["model"], r["status"]) for r in table] == [("bias", "ok"), ("popularity", "ok"), ("cf", "failed")]
    assert "cf: failed: training diverged" in (folder / "comparison.md").read_text()
    assert "trained 3 epoch(s)" not in (folder / "compare.log").read_text()  # diverged, never 8 epochs
    assert (folder / "FAILED").is_file()


def test_compare_entries_train_with_the_runs_train_section():
    from cfrec.apps.compare import model_entry

    _, train = model_entry("cf", {"model": "cf_rating"}, {"epochs": 1, "lr": 0.5, "resume": None})
    assert train == {"epochs": 1, "lr": 0.5}
    _, train = model_entry("cf", {"model": "cf"}, {"epochs": 1, "lr": 0.5})  # the preset's train=cf: 6 epochs
    assert train == {"epochs": 6, "lr": 0.5}
    _, train = model_entry("cf", {"model": "cf", "train": {"epochs": 4}}, {"epochs": 1})
    assert train == {"epochs": 4}
    with pytest.raises(ConfigError, match=r"^train\.epochs: "):
        model_entry("cf", {"model": "cf_rating"}, {"epochs": 0})


# -- 5 & 15. every option checked before the data is read, named by its full key ------------------------
@pytest.fixture(scope="module")
def unreadable(tmp_path_factory) -> Path:
    """A MovieLens folder whose ratings file is malformed: reading it is a DataFormatError, so a
    ConfigError proves the check came before the data was read."""
    folder = tmp_path_factory.mktemp("bad_ml")
    (folder / "ratings.dat").write_text("1::2::5::978300760\nnot a rating line\n")
    return folder


BAD = [
    (["index.M=1"], "index.M"), (["index.space=hamming"], "index.space"), (["index.ef=0"], "index.ef"),
    (["+index.bogus=1"], "index.bogus"), (["+eval.bogus=1"], "eval.bogus"), (["+bogus=1"], "bogus"),
    (["+run.bogus=1"], "run.bogus"), (["run.plots=maybe"], "run.plots"), (["train.lr=-1"], "train.lr"),
    (["train.lr=abc"], "train.lr"), (["train.momentum=abc"], "train.momentum"), (["+train.bogus=1"], "train.bogus"),
    (["train.optimizer=rmsprop"], "train.optimizer"), (["model.knn_blend=0"], "model.knn_blend"),
    (["model.knn_blend=many"], "model.knn_blend"), (["seed=-1"], "seed"), (["seed=abc"], "seed"),
    (["split=kfold", "split.n_folds=0"], "split.n_folds"), (["split=kfold", "split.fold=5"], "split.fold"),
    (["split.seed=-3"], "split.seed"), (["split.test_ratio=0"], "split.test_ratio"), (["+split.bogus=1"], "split.bogus"),
    (["eval.memory_budget_mb=0"], "eval.memory_budget_mb"), (["eval.memory_budget_mb=-5"], "eval.memory_budget_mb"),
    (["eval.ks=[]"], "eval.ks"), (["eval.ks=[a]"], "eval.ks[0]"), (["eval.limit=0"], "eval.limit"),
    (["train.resume=/nonexistent"], "train.resume"), (["model.rank=-1"], "model.rank"), (["device=tpu"], "device"),
]


def refused(*overrides: str, name: str = "config") -> str:
    """The full key a bad option is refused under, before any data is read: by the composition
    (a value of the wrong type for the typed schema, cfrec.apps.schema) or by `prepare`'s checks."""
    from hydra.errors import ConfigCompositionException

    try:
        cfg = config(*overrides, name=name)
    except ConfigCompositionException as err:
        return err.__cause__.full_key
    with pytest.raises(ConfigError) as err:
        prepare(cfg)
    return err.value.key


@pytest.mark.parametrize(("overrides", "key"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_options_fail_before_the_data_is_read(unreadable, overrides, key):
    assert refused("data=movielens", f"data.root={unreadable}", "model=cf", *overrides) == key


def test_a_plain_dict_is_checked_against_the_same_schemas(unreadable):
    """From Python (no composition) the same schemas refuse a wrong type, naming the full key."""
    cfg = config("data=movielens", f"data.root={unreadable}", "model=cf")
    for section, key, bad in (("train", "lr", "abc"), ("run", "plots", "maybe"), ("eval", "ks", ["a"]),
                              ("model", "rank", "abc"), ("split", "seed", "abc")):
        with pytest.raises(ConfigError) as err:
            prepare({**cfg, section: {**cfg[section], key: bad}})
        assert err.value.key.startswith(f"{section}.{key}")
    with pytest.raises(ConfigError) as err:
        prepare({**cfg, "seed": "abc"})
    assert err.value.key == "seed"


def _bad_value(value):
    """A value of the wrong kind for a default ``value`` (None: skipped; free-form strings: skipped)."""
    if isinstance(value, bool):
        return "maybe"
    if isinstance(value, (int, float)):
        return "abc"
    if isinstance(value, list):
        return "abc"
    if isinstance(value, str):
        return "no-such-choice"
    return None


GROUPS = {group: sorted(p.stem for p in (CONF / group).glob("*.yaml")) for group in ("split", "model", "train", "eval", "index")}
FREE_FORM = {"model.hnsw"}  # a preset name or a dict: checked by value (index presets), not by type


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_key_of_every_config_group_is_checked_before_the_data_is_read(unreadable, group):
    """Issue 16: a value of the wrong kind for any key of any option of any group (as it
    composes: schema and preset) is refused naming that key, before the (malformed) data file is read."""
    checked = 0
    for option in GROUPS[group]:
        selection = [] if group in ("train", "eval", "index") else [f"{group}={option}"]
        model = [] if group == "model" else ["model=bias"]
        base = ["data=movielens", f"data.root={unreadable}", *model, *selection]
        for key, value in config(*base)[group].items():
            bad = _bad_value(value)
            if bad is None or f"{group}.{key}" in FREE_FORM or key == "name":
                continue
            key_refused = refused(*base, f"{group}.{key}={bad}")
            assert key_refused.startswith(f"{group}.{key}") or key_refused == group, (option, key, key_refused)
            checked += 1
    assert checked >= 4


def test_the_checks_cover_the_compare_app(unreadable):
    cfg = config("data=movielens", f"data.root={unreadable}", "+compare.bogus=1", name="compare")
    from cfrec.apps.compare import compare

    with pytest.raises(ConfigError, match=r"^compare\.bogus: unknown option"):
        compare(cfg, "/nonexistent-never-written")
    cfg = config("data=movielens", f"data.root={unreadable}", "train.epochs=0", name="compare")
    with pytest.raises(ConfigError, match=r"^train\.epochs: "):
        compare(cfg, "/nonexistent-never-written")


# -- 8, 9, 13: what depends on the data, before any fit ------------------------------------------------
def _split(n_users=40, n_items=60, n_ratings=800, seed=3) -> Split:
    return per_user_split(synthetic(n_users=n_users, n_items=n_items, n_ratings=n_ratings, seed=seed).ratings)


def test_tiny_data_with_an_empty_test_set_fails_before_fitting(tmp_path):
    rows = [f"{u},{i},{(u + i) % 5 + 1}" for u in range(1, 11) for i in range(1, 4)]  # 10 users x 3 ratings
    path = tmp_path / "tiny.csv"
    path.write_text("userId,movieId,rating\n" + "\n".join(rows) + "\n")
    folder = tmp_path / "run"
    done = cli("cfrec.apps.train", "data=csv", f"data.path={path}", "model=cf", "run.progress=false",
               f"hydra.run.dir={folder}", cwd=tmp_path)
    line = one_line_error(done)
    assert "cfrec-train: split: the test set is empty" in line
    assert (folder / "FAILED").read_text().strip() == line.removeprefix("cfrec-train: ")
    assert not (folder / "metrics.json").exists() and not (folder / "train_state.pt").exists()


def test_undefined_metrics_are_null_in_valid_json(tmp_path):
    train, test = _split()
    result = evaluate(BiasBaseline().fit(train), train, test, ks=(5,), like_threshold=5.5)
    assert np.isnan(result["recall@5"]) and result["n_ranking_users"] == 0  # not a silent 0
    write_json(tmp_path / "m.json", result)
    loaded = json.loads((tmp_path / "m.json").read_text())  # strict JSON: no bare NaN
    assert loaded["recall@5"] is None and loaded["rmse"] == pytest.approx(result["rmse"])


def test_data_dependent_options_fail_before_fitting():
    split = _split()
    cfg = config(*TINY, "model=cf")
    check_against_data(cfg, split, learned=True)
    for overrides, key in [(["eval.like_threshold=10"], "eval.like_threshold"), (["eval.ks=[100000]"], "eval.ks")]:
        with pytest.raises(ConfigError) as err:
            check_against_data(config(*TINY, "model=cf", *overrides), split, learned=True)
        assert err.value.key == key


def test_a_dense_layout_too_big_for_memory_is_refused_before_allocating():
    big = synthetic(n_users=40_000, n_items=20_000, n_ratings=200_000, seed=1).ratings
    split = per_user_split(big, method="vectorized")
    assert split.train.n_users * split.train.n_items * 8 > DENSE_LIMIT_BYTES
    with pytest.raises(ConfigError, match=r"^train\.layout: dense needs"):
        check_against_data(config(*TINY, "model=cf", "train.layout=dense"), split, learned=True)
    check_against_data(config(*TINY, "model=cf", "train.layout=auto"), split, learned=True)


def test_ranking_batches_count_the_score_temporaries():
    train, _ = _split()
    knn = UserKNN(k=5, dim=4, ranking="prediction").fit(train)
    assert score_blocks(knn) == 8 and score_blocks(CollaborativeFiltering(rank=2)) == 2
    n_items, budget = 20_000, 64
    batch = user_batch_size(n_items, budget, score_blocks(knn))
    assert batch * n_items * (4 * 8) <= budget * 2**20  # the score blocks alone fit in the budget
    with pytest.raises(ValueError, match="memory_budget_mb must be positive"):
        user_batch_size(n_items, 0)


# -- 11, 12: interrupts and resumes ----------------------------------------------------------------------
def test_ctrl_c_during_evaluation_keeps_the_model_and_says_how_to_finish(tmp_path):
    folder = tmp_path / "run"
    # one user per ranking batch over 20,000 users: seconds of evaluation, however fast the machine
    data = ["data=synthetic", "data.n_users=20000", "data.n_items=200", "data.n_ratings=120000", "run.progress=false"]
    args = [sys.executable, "-m", "cfrec.apps.train", *data, *CF, "train.epochs=1", "eval.memory_budget_mb=0.002",
            f"hydra.run.dir={folder}"]
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(args, cwd=tmp_path, env=env, preexec_fn=default_sigint, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (folder / "model.json").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, out + err
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted: the fitted model is saved in" in lines[0]
    assert f"train.resume={folder}" in lines[0] and (folder / "model.pt").is_file()
    assert not (folder / "metrics.json").exists()


def test_the_resume_hint_under_torchrun_is_a_torchrun_command(monkeypatch):
    assert launcher() == ["cfrec-train"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert launcher() == ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "cfrec.apps.train"]


@pytest.fixture(scope="module")
def saved_cf(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("saved_cf")
    run(config(*TINY, *CF), folder)
    return folder


@pytest.mark.parametrize(("change", "key"), [("train.optimizer=sgd", "train.optimizer"),
                                              ("train.val_fraction=0.1", "train.val_fraction"),
                                              ("train.batch_size=256", "train.batch_size"),
                                              ("train.max_batches=200", "train.max_batches")])
def test_resume_refuses_changed_training_options(saved_cf, tmp_path, change, key):
    with pytest.raises(ConfigError) as err:
        run(config(*TINY, *CF, change, f"train.resume={saved_cf}"), tmp_path)
    assert err.value.key == key and "a resume continues the same training" in str(err.value)


def test_resume_allows_more_epochs(saved_cf, tmp_path):
    metrics = run(config(*TINY, *CF, "train.epochs=3", f"train.resume={saved_cf}"), tmp_path)
    assert metrics["epochs_run"] == 3


def test_resume_may_fold_the_slice_back_in_after_the_last_epoch(saved_cf, tmp_path, caplog):
    """fold_back acts after the epochs, so a finished run may be resumed to fold its slice back in."""
    caplog.set_level(logging.INFO, logger="cfrec.train.trainer")
    metrics = run(config(*TINY, *CF, "train.fold_back=1", f"train.resume={saved_cf}"), tmp_path)
    assert metrics["epochs_run"] == 2 and "folded the validation slice back in: 1 more epoch(s)" in caplog.text


def test_resume_says_when_nothing_is_left_to_train(saved_cf, tmp_path, caplog):
    metrics = run(config(*TINY, *CF, "train.epochs=1", f"train.resume={saved_cf}"), tmp_path)
    assert metrics["epochs_run"] == 2
    assert "is already at epoch 2, train.epochs is 1: nothing is left to train" in caplog.text


def test_resume_names_the_changed_model_option(saved_cf, tmp_path):
    with pytest.raises(ConfigError, match=r"trained another model or data \(model\.rank: 4 → 3\)"):
        run(config(*TINY, *CF, "model.rank=3", f"train.resume={saved_cf}"), tmp_path)


def test_resume_refuses_the_same_file_with_renumbered_ids(tmp_path):
    """Same path, same counts, other ids: every row's state would continue as another user's."""
    rng = np.random.default_rng(0)
    rows = [(u, i, int(rng.integers(1, 6))) for u in range(1, 31) for i in rng.choice(60, 12, replace=False) + 1]
    path = tmp_path / "ratings.csv"
    write = lambda ratings: path.write_text("userId,movieId,rating\n" + "".join(f"{u},{i},{r}\n" for u, i, r in ratings))
    write(rows)
    data = ["data=csv", f"data.path={path}", "run.progress=false", *CF]
    run(config(*data), tmp_path / "a")
    write([(0 if u == 30 else u, i, r) for u, i, r in rows])  # user 30 becomes user 0: every code shifts
    with pytest.raises(ConfigError, match="train.resume: the training data changed since"):
        run(config(*data, "train.epochs=3", f"train.resume={tmp_path / 'a'}"), tmp_path / "b")


# -- 14, 15: what the user sees ---------------------------------------------------------------------------
def test_a_user_mistake_is_one_line_and_debug_shows_the_traceback(tmp_path):
    done = cli("cfrec.apps.train", *QUICK, "eval.like_threshold=10", f"hydra.run.dir={tmp_path / 'a'}", cwd=tmp_path)
    assert "cfrec-train: eval.like_threshold: 10 is above the highest rating (5)" in one_line_error(done)
    debug = cli("cfrec.apps.train", *QUICK, "seed=-1", f"hydra.run.dir={tmp_path / 'b'}", cwd=tmp_path,
                env={"CFREC_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stdout + debug.stderr
    assert "cfrec-train: seed: must be an integer >= 0, got -1" in debug.stderr
