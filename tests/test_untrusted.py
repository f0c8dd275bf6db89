"""Files from someone else's run folder are untrusted: crafted HNSW indexes and checkpoints
give a clean error (or a correct rebuilt answer), never a crash or a silent garbage answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cfrec.errors import CheckpointError
from cfrec.index import HNSWIndex, exact_search
from cfrec.io import sha256

DRIVER = Path(__file__).with_name("hnsw_crash_driver.py")


def write_case(folder: Path, data: bytes, meta: dict) -> None:
    """A crafted index: ``data`` as items.hnsw, ``meta`` with the checksum of ``data`` recomputed."""
    folder.mkdir(parents=True)
    (folder / "items.hnsw").write_bytes(data)
    (folder / "items.hnsw.json").write_text(json.dumps({**meta, "sha256": sha256(folder / "items.hnsw")}))


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> tuple[Path, bytes, dict]:
    """150 byte-flipped copies of a saved index, each with a matching checksum, plus meta edits."""
    root = tmp_path_factory.mktemp("crafted")
    vectors = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    path = HNSWIndex().build(vectors).save(root / "orig" / "items.hnsw")
    expected = exact_search(vectors, vectors[:20], 5, exclude=np.arange(20))[0].numpy()
    np.save(root / "vectors.npy", vectors)
    np.save(root / "expected.npy", expected)
    data, meta = path.read_bytes(), json.loads((root / "orig" / "items.hnsw.json").read_text())
    rng = np.random.default_rng(1)
    level0_end = 96 + 200 * (4 + 8 * 32 + 4 * 16 + 8)
    positions = np.concatenate([rng.integers(0, 96, 50), rng.integers(96, level0_end, 60),
                                rng.integers(level0_end, len(data), 40)])
    for n, pos in enumerate(positions):
        flipped = bytearray(data)
        flipped[pos] ^= int(rng.integers(1, 256))
        write_case(root / f"flip{n:03d}", bytes(flipped), meta)
    edits = {"dim3": {"dim": 3}, "dim32": {"dim": 32}, "count": {"count": 150}, "count_more": {"count": 400},
             "space": {"params": {**meta["params"], "space": "l2"}}, "M": {"params": {**meta["params"], "M": 8}},
             "params": {"params": {"bogus": 1}}, "dim_text": {"dim": "16"}, "nested": {"params": [[[]]]}}
    for name, edit in edits.items():
        write_case(root / f"meta_{name}", data, {**meta, **edit})
    write_case(root / "truncated", data[: len(data) // 2], meta)
    write_case(root / "appended", data + b"\0" * 8, meta)
    return root, data, meta


def run_driver(folder: Path, mode: str) -> dict[str, int]:
    out = subprocess.run([sys.executable, str(DRIVER), str(folder), mode], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return {row["case"]: row["code"] for row in map(json.loads, out.stdout.splitlines())}


def test_crafted_index_files_are_clean_errors_never_crashes(crafted):
    root, _, _ = crafted
    codes = run_driver(root, "cfrec")
    assert len(codes) == 150 + 9 + 2 + 1
    crashed = {case: code for case, code in codes.items() if code < 0}
    assert not crashed, f"killed by a signal: {crashed}"
    assert codes["orig"] == 0
    assert all(code == 3 for case, code in codes.items() if case.startswith(("meta_", "truncated", "appended"))), codes
    wrong = {case: code for case, code in codes.items() if code not in (0, 3)}
    assert not wrong, f"neither a correct answer nor a CheckpointError: {wrong}"  # 5 would be a garbage answer
    # most flips are caught; the rest hit unused link slots (hnswlib alone: 20 of the 150 segfault)
    assert sum(code == 3 for code in codes.values()) >= 80


def test_wrong_dimension_in_the_json_is_refused(crafted, tmp_path):
    root, data, meta = crafted
    write_case(tmp_path / "c", data, {**meta, "dim": 3})
    with pytest.raises(CheckpointError, match="header field"):
        HNSWIndex.load(tmp_path / "c" / "items.hnsw")
    vectors = np.load(root / "vectors.npy")
    with pytest.raises(CheckpointError, match="200 x 3 vectors, the model has 200 x 16"):
        HNSWIndex.load(tmp_path / "c" / "items.hnsw", vectors=vectors)


def test_an_index_of_other_vectors_is_refused(crafted):
    root, _, _ = crafted
    vectors = np.load(root / "vectors.npy")
    assert len(HNSWIndex.load(root / "orig" / "items.hnsw", vectors=vectors)) == 200
    with pytest.raises(CheckpointError, match="differ from the model's"):
        HNSWIndex.load(root / "orig" / "items.hnsw", vectors=vectors[::-1].copy())


# -- run folders: checkpoints, training state, serving ----------------------------------------
import io  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402

import torch  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import cfrec  # noqa: E402
from cfrec.apps.pipeline import run  # noqa: E402
from cfrec.apps.recommend import main as recommend_main  # noqa: E402
from cfrec.checkpoint import META, TENSORS, TRAIN_STATE, load_model, load_train_state, save_model  # noqa: E402
from cfrec.data import synthetic  # noqa: E402
from cfrec.errors import ConfigError, UnknownIdError  # noqa: E402
from cfrec.io import remove_stale_temps, save_tensors  # noqa: E402
from cfrec.models import UserKNN  # noqa: E402
from cfrec.shared_tensors import MARK  # noqa: E402

TINY = ["data=synthetic", "data.n_users=120", "data.n_items=80", "data.n_ratings=3000", "run.progress=false",
        "run.plots=false", "run.tensorboard=false"]
CF = ["model=cf", "model.rank=8", "model.l2=2.0", "train.epochs=4", "train.batch_size=512", "train.val_fraction=0.1"]


def config(*overrides: str) -> dict:
    with initialize_config_module("cfrec.conf", version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=[*TINY, *overrides]), resolve=True)


@pytest.fixture(scope="module")
def cf_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("cf_run")
    run(config(*CF), run_dir)
    return run_dir


def copy_run(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to)
    return to


def edit_meta(folder: Path, edit) -> None:
    meta = json.loads((folder / META).read_text())
    edit(meta)
    (folder / META).write_text(json.dumps(meta))


def _set(path: tuple, value):
    def edit(meta):
        node = meta
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


def _delete(*path: str):
    def edit(meta):
        node = meta
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return edit


def _duplicate_user(meta):
    meta["user_ids"][1] = meta["user_ids"][0]


def _fewer_items(meta):
    meta["shape"]["n_items"] -= 1
    meta["item_ids"].pop()
    meta["items"] = {k: v[:-1] if k != "genre_names" else v for k, v in meta["items"].items()}


META_EDITS = {
    "no config": (_delete("config"), "config: missing"),
    "no n_items": (_delete("shape", "n_items"), "shape.n_items: missing"),
    "config not an object": (_set(("config",), "x"), "config: expected an object"),
    "n_users a string": (_set(("shape", "n_users"), "120"), "shape.n_users: expected an integer"),
    "duplicate id": (_duplicate_user, "user_ids: id .* appears twice"),
    "short titles": (_set(("items", "titles"), ["a"]), "items.titles: must be 80 strings"),
    "reversed range": (_set(("shape", "rating_range"), [5, 1]), "shape.rating_range: must be \\[low, high\\]"),
    "nan range": (_set(("shape", "rating_range"), [1, float("nan")]), "shape.rating_range"),
    "wrong n_items": (_fewer_items, "model.pt: seen.indices: movie codes outside \\[0, 79\\)"),
    "wrong rank": (_set(("config", "rank"), 9), "config.rank"),
    "w0 out of range": (_set(("config", "w0"), 5), "config: w0"),
    "w0 a string": (_set(("config", "w0"), "0.3"), "config: w0"),
    "unknown option": (_set(("config", "bogus"), 1), "config: .*bogus"),
    "unknown model": (lambda meta: meta.update(model="nope", **{"class": "nope"}), "class: unknown model 'nope'"),
    "unknown model without class": (lambda meta: meta.pop("class") and meta.update(model="nope"),
                                    "model: unknown model 'nope'"),
    "unknown class": (_set(("class",), "nope"), "class: unknown model 'nope'"),
    "predicts_ratings a string": (_set(("predicts_ratings",), "yes"), "predicts_ratings: expected bool"),
    "mixed ids": (_set(("item_ids",), [1] * 79 + ["x"]), "item_ids: ids must be all integers or all strings"),
}


@pytest.mark.parametrize("name", sorted(META_EDITS))
def test_model_json_is_checked_against_its_schema_and_the_tensors(cf_run, tmp_path, name):
    folder = copy_run(cf_run, tmp_path / "run")
    edit, message = META_EDITS[name]
    edit_meta(folder, edit)
    with pytest.raises(CheckpointError, match=message) as caught:
        cfrec.load(folder)
    assert str(caught.value).startswith(str(folder / (TENSORS if "model.pt" in message else META)))


def test_deeply_nested_json_and_recommend_command_are_one_line(cf_run, tmp_path, capsys):
    folder = copy_run(cf_run, tmp_path / "run")
    meta = (folder / META).read_text()
    (folder / META).write_text(meta.replace('"config": {', '"config": {"deep": ' + "[" * 100_000 + "]" * 100_000 + ", ", 1))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        cfrec.load(folder)
    edit_meta(copy_run(cf_run, tmp_path / "run2"), _set(("shape", "rating_range"), [5, 1]))
    assert recommend_main([str(tmp_path / "run2"), "--user", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "shape.rating_range" in err and "Traceback" not in err


def test_intact_checkpoint_still_loads_and_predicts_in_range(cf_run):
    model = cfrec.load(cf_run)
    users, items = model.user_map.ids[:50], model.item_map.ids[:50]
    pred = model.predict_many(users, items)
    assert ((pred >= 1) & (pred <= 5)).all() and pred.std() > 0


def _as_if_saved_on_cuda(path: Path) -> None:
    """Rewrite the storage locations in a torch zip checkpoint from 'cpu' to 'cuda:0'."""
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for info, data in entries:
            if info.filename.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            archive.writestr(info, data)
    path.write_bytes(out.getvalue())


def test_a_checkpoint_saved_on_cuda_loads_on_the_cpu(cf_run, tmp_path):
    folder = copy_run(cf_run, tmp_path / "run")
    _as_if_saved_on_cuda(folder / TENSORS)
    edit_meta(folder, _set(("sha256",), sha256(folder / TENSORS)))
    if not torch.cuda.is_available():  # the file really asks for CUDA
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(folder / TENSORS, weights_only=True)
    model = cfrec.load(folder, device="cpu")
    assert all(t.device.type == "cpu" for t in model.model.state_dict().values())
    original = cfrec.load(cf_run)
    users, items = original.user_map.ids[:20], original.item_map.ids[:20]
    assert np.array_equal(model.predict_many(users, items), original.predict_many(users, items))


def test_a_knn_checkpoint_from_a_gpu_run_is_rebuilt_on_the_requested_device(tmp_path):
    data = synthetic(n_users=60, n_items=40, n_ratings=900, seed=3).ratings
    knn = UserKNN(k=5, dim=4).fit(data)
    save_model(knn, data, tmp_path)
    edit_meta(tmp_path, _set(("config", "device"), "cuda:0"))  # as a GPU run writes it
    loaded = load_model(tmp_path, device="cpu").model
    assert loaded.device == torch.device("cpu") and loaded.config()["device"] == "cpu"
    users, items = torch.arange(10), torch.arange(10)
    assert torch.allclose(loaded.predict(users, items), knn.predict(users, items))


# -- fold-in and API arguments ------------------------------------------------------------------
@pytest.mark.parametrize(("value", "message"), [(100, "rating 100 is outside this model's rating range \\[1, 5\\]"),
                                                (0.5, "rating 0.5 is outside"), (float("nan"), "rating nan is not a finite"),
                                                (float("inf"), "rating inf is not a finite"), ("4", "rating '4' is not a number")])
def test_fold_in_refuses_ratings_off_the_scale(cf_run, value, message):
    model = cfrec.load(cf_run)
    movie = int(model.item_map.ids[3])
    with pytest.raises(ConfigError, match=f"ratings: movie {movie}: {message}"):
        model.fold_in({int(model.item_map.ids[0]): 4.0, movie: value})
    assert len(model.fold_in({movie: 5, int(model.item_map.ids[0]): 1.0}).recommend(k=3)) == 3  # the ends are fine


@pytest.mark.parametrize("rating", ["100", "nan", "-1"])
def test_recommend_command_prints_one_line_for_a_rating_off_the_scale(cf_run, capsys, rating):
    movie = int(cfrec.load(cf_run).item_map.ids[0])
    assert recommend_main([str(cf_run), "--rate", f"{movie}={rating}"]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and f"movie {movie}: rating" in captured.err and not captured.out


def test_api_arguments_are_named_value_errors(cf_run):
    model = cfrec.load(cf_run)
    user, movie = model.user_map.ids[0], model.item_map.ids[0]
    for bad_k in (-1, 0, 2.5, True, "3"):
        with pytest.raises(ValueError, match="^k: must be an integer >= 1"):
            model.recommend(user, k=bad_k)
        with pytest.raises(ValueError, match="^k: must be an integer >= 1"):
            model.similar_movies(movie, k=bad_k)
    with pytest.raises(ValueError, match="^min_ratings: "):
        model.recommend(user, min_ratings=-2)
    with pytest.raises(ValueError, match="^movie_ids: 1 movie id\\(s\\) for 3 user id\\(s\\)"):
        model.predict_many(model.user_map.ids[:3], [movie])
    n_items, n_users = len(model.item_map), len(model.user_map)
    assert len(model.recommend(user, k=10_000, exclude_seen=False)) == n_items  # k clamps to what exists
    everything = model.similar_movies(movie, k=10_000)
    assert len(everything) == n_items - 1 and movie not in set(everything.movie_id)
    assert len(model.similar_users(user, k=n_users + 5)) == n_users - 1


def test_nearly_all_rows_among_duplicates_fall_back_to_exact_search():
    """A content model's movie vectors repeat (one per genre mix): hnswlib cannot return n-1 of them."""
    rng = np.random.default_rng(0)
    data = np.repeat(rng.normal(size=(6, 8)).astype(np.float32), 150, axis=0)  # 900 rows, 6 distinct
    index = HNSWIndex(M=4, ef_construction=10).build(data)
    labels, dist = index.query(data[:3], len(data) - 1, exclude=np.arange(3))
    exact, exact_dist = exact_search(data, data[:3], len(data) - 1, exclude=np.arange(3))
    assert (labels >= 0).all() and torch.allclose(dist, exact_dist, atol=1e-5)
    for row, own in enumerate(range(3)):
        assert sorted(labels[row].tolist()) == sorted(set(range(len(data))) - {own})


def test_unknown_user_with_fallback_gets_the_most_rated_movies(cf_run, caplog):
    strict, lenient = cfrec.load(cf_run), cfrec.load(cf_run, unknown="fallback")
    with pytest.raises(UnknownIdError):
        strict.recommend(99999)
    with caplog.at_level(logging.WARNING, logger="cfrec.serving"):
        top = lenient.recommend(99999, k=5)
    assert "unknown user id 99999: recommending the most rated movies" in caplog.text
    counts = np.bincount(lenient.checkpoint.seen.indices, minlength=len(lenient.item_map))
    assert list(top.score) == sorted(counts, reverse=True)[:5]
    assert (counts[lenient.item_map.codes(list(top.movie_id))] == top.score.to_numpy()).all()
    floor = int(np.sort(counts)[-3])
    assert (lenient.recommend(99999, k=50, min_ratings=floor).score >= floor).all()
    assert lenient.recommend(int(lenient.user_map.ids[0]), k=5).equals(strict.recommend(int(strict.user_map.ids[0]), k=5))


def test_a_crafted_index_in_a_run_folder_is_rebuilt_from_the_model(cf_run, tmp_path, caplog):
    folder = copy_run(cf_run, tmp_path / "run")
    data = bytearray((folder / "items.hnsw").read_bytes())
    data[20] ^= 0x40  # the element count
    (folder / "items.hnsw").write_bytes(bytes(data))
    edit_meta_index = json.loads((folder / "items.hnsw.json").read_text())
    edit_meta_index.update(sha256=sha256(folder / "items.hnsw"), dim=3)
    (folder / "items.hnsw.json").write_text(json.dumps(edit_meta_index))
    model = cfrec.load(folder)
    movie = model.item_map.ids[5]
    with caplog.at_level(logging.WARNING, logger="cfrec.serving"):
        similar = model.similar_movies(movie, k=5)
    assert "building the index from the model's vectors instead" in caplog.text
    vectors = model.vectors("item")
    exact = exact_search(vectors, vectors[5:6], 5, exclude=np.array([5]))[0][0].numpy()
    assert list(similar.movie_id) == list(model.item_map.to_ids(exact))


# -- temps of killed writers, and the lighter training state ------------------------------------
KILLED_WRITER = """
import sys, time
from pathlib import Path
from cfrec.io import atomic_path
with atomic_path(Path(sys.argv[1]) / "train_state.pt") as tmp:
    tmp.write_bytes(b"half a state")
    print(tmp, flush=True)
    time.sleep(120)
"""


def test_a_writer_killed_mid_write_leaves_a_temp_the_next_save_removes(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    temp = Path(writer.stdout.readline().strip())
    assert temp.parent == tmp_path and temp.is_file() and temp.name.startswith(".train_state.pt.")
    assert remove_stale_temps(tmp_path) == [] and temp.is_file()  # its writer still runs
    writer.send_signal(signal.SIGKILL)
    assert writer.wait(timeout=60) == -signal.SIGKILL
    assert temp.is_file()
    legacy_old, legacy_new = tmp_path / ".model.pt.ab3_xk9q.tmp", tmp_path / ".model.pt.zz9_aa1b.tmp"
    for legacy in (legacy_old, legacy_new):
        legacy.write_bytes(b"x")
    os.utime(legacy_old, (time.time() - 2 * 86400,) * 2)
    save_tensors(tmp_path / "other.pt", {"x": torch.zeros(1)})
    assert not temp.exists() and not legacy_old.exists() and legacy_new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [legacy_new.name, "other.pt"]


def _markers(tree) -> list[str]:
    if isinstance(tree, dict):
        return [tree[MARK]] if set(tree) == {MARK} else [m for v in tree.values() for m in _markers(v)]
    if isinstance(tree, (list, tuple)):
        return [m for v in tree for m in _markers(v)]
    return []


def test_train_state_refers_to_model_pt_and_resumes_bit_identically(tmp_path):
    steady = [*CF, "train.schedule=constant", "train.lr=0.005"]
    first, resumed, straight = tmp_path / "first", tmp_path / "resumed", tmp_path / "straight"
    run(config(*steady), first)
    raw = torch.load(first / TRAIN_STATE, weights_only=True)
    assert raw["shared"]["file"] == TENSORS and {"model.theta", "model.pref_theta"} <= set(_markers(raw["trainer"]))
    state, _ = load_train_state(first)
    model_pt = torch.load(first / TENSORS, weights_only=True)
    assert isinstance(state["model"]["theta"], torch.Tensor) and state["model"]["theta"].shape == model_pt["model.theta"].shape
    run(config(*steady, "train.epochs=7", f"train.resume={first}"), resumed)
    run(config(*steady, "train.epochs=7"), straight)
    a, b = torch.load(resumed / TENSORS, weights_only=True), torch.load(straight / TENSORS, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model.")) and a.keys() == b.keys()


def test_a_training_state_from_another_version_is_refused_by_name(cf_run, tmp_path):
    """Version 1 kept a preference head as four tensors; this cfrec trains it packed (version 2):
    resuming from such a state says so instead of failing inside load_state_dict."""
    folder = copy_run(cf_run, tmp_path / "run")
    raw = torch.load(folder / TRAIN_STATE, weights_only=True)
    torch.save({**raw, "version": 1}, folder / TRAIN_STATE)
    with pytest.raises(CheckpointError, match=r"train_state.pt: training state version 1, this cfrec reads 2; train again"):
        load_train_state(folder)


def test_saving_the_model_again_keeps_the_training_state_usable(cf_run, tmp_path):
    folder = copy_run(cf_run, tmp_path / "run")
    before, _ = load_train_state(folder)
    checkpoint = load_model(folder)
    data = synthetic(n_users=120, n_items=80, n_ratings=3000).ratings  # what data=synthetic trained on, by shape
    knn = UserKNN(k=5, dim=4).fit(data)
    save_model(knn, data, folder)  # another model.pt: the state must not refer to it
    after, _ = load_train_state(folder)
    assert torch.equal(before["model"]["theta"], after["model"]["theta"]) and checkpoint.model is not None
    (folder / TENSORS).write_bytes((cf_run / TENSORS).read_bytes())  # model.pt changed behind the state's back
    raw = torch.load(folder / TRAIN_STATE, weights_only=True)
    if raw.get("shared"):
        with pytest.raises(CheckpointError, match="missing or was rewritten"):
            load_train_state(folder)


TENSOR_CASES = """
import json, sys
from pathlib import Path
import cfrec
from cfrec.errors import CheckpointError
for case in sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir()):
    try:
        model = cfrec.load(case)
        user, movie = model.user_map.ids[0], model.item_map.ids[0]
        model.predict_many(model.user_map.ids[:5], model.item_map.ids[:5])
        model.recommend(user, k=5)
        outcome = "ok"
    except CheckpointError:
        outcome = "error"
    except Exception as err:
        outcome = f"other {type(err).__name__}: {err}"
    print(json.dumps({"case": case.name, "outcome": outcome}), flush=True)
"""


def _tensor_edits(tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    edits = {"short": tensor[:-1] if tensor.dim() else tensor[None], "extra_dim": tensor[None],
             "empty": tensor.new_zeros((0,))}
    if tensor.is_floating_point():
        edits |= {"nan": tensor.clone().fill_(float("nan")), "int": tensor.long(), "double": tensor.double()}
    elif tensor.numel():
        top = torch.iinfo(tensor.dtype).max if tensor.dtype != torch.bool else 1
        edits |= {"huge": tensor.clone().fill_(top), "negative": tensor.clone().fill_(-top), "float": tensor.float()}
    return edits


def test_edited_tensors_in_model_pt_are_checkpoint_errors_never_crashes(cf_run, tmp_path):
    data = synthetic(n_users=60, n_items=40, n_ratings=900, seed=3).ratings
    knn_dir = tmp_path / "knn"
    save_model(UserKNN(k=5, dim=4).fit(data), data, knn_dir)
    cases = tmp_path / "cases"
    for source in (cf_run, knn_dir):
        tensors = torch.load(source / TENSORS, weights_only=True)
        for key, tensor in tensors.items():
            for edit, changed in _tensor_edits(tensor).items():
                case = cases / f"{source.name}-{key}-{edit}"
                case.mkdir(parents=True)
                torch.save({**tensors, key: changed}, case / TENSORS)
                meta = json.loads((source / META).read_text())
                (case / META).write_text(json.dumps({**meta, "sha256": sha256(case / TENSORS)}))
        case = cases / f"{source.name}-not-a-dict"
        case.mkdir()
        torch.save([tensors["seen.indptr"]], case / TENSORS)
        (case / META).write_text(json.dumps({**json.loads((source / META).read_text()), "sha256": sha256(case / TENSORS)}))
    done = subprocess.run([sys.executable, "-c", TENSOR_CASES, str(cases)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = {row["case"]: row["outcome"] for row in map(json.loads, done.stdout.splitlines())}
    assert len(outcomes) == sum(1 for p in cases.iterdir())
    other = {case: outcome for case, outcome in outcomes.items() if outcome not in ("ok", "error")}
    assert not other, other
    assert sum(outcome == "error" for outcome in outcomes.values()) >= len(outcomes) // 2


def test_a_read_only_run_folder_with_a_stale_temp_still_loads(cf_run, tmp_path):
    folder = copy_run(cf_run, tmp_path / "run")
    stale = folder / ".model.pt.999999@elsewhere.abcd1234.cfrec-tmp"
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    folder.chmod(0o555)
    try:
        assert len(cfrec.load(folder).recommend(int(cfrec.load(cf_run).user_map.ids[0]), k=3)) == 3
        assert stale.exists() or os.geteuid() == 0  # root may delete anyway
    finally:
        folder.chmod(0o755)
    remove_stale_temps(folder)
    assert not stale.exists()
