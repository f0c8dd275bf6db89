"""The benchmark package (scripts/benchmark/) on tiny synthetic data: the JSON's structure, sane
numbers, the reference EASE against a brute-force solve, the entry points. No timing assertions:
speed claims live in the benchmark's own output."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from benchmark import cli, data, peers, report, sections  # noqa: E402

import cfrec.data  # noqa: E402
from cfrec.evaluate import evaluate  # noqa: E402

TINY = [
    "--data", "synthetic:3000", "synthetic:2000", "--repeats", "2", "--warmup", "0", "--models", "bias", "cf",
    "--loop-pairs", "10", "--loop-users", "3", "--min-ratings", "1500", "--max-ratings", "5000", "--scaling-epochs", "1",
    "--load-helpers", "1",
]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """Every section, in this process, on CPU, plus a CUDA request that skips where there is no GPU."""
    out = tmp_path_factory.mktemp("bench")
    cli.main([*TINY, "--no-isolate", "--device", "cpu", "cuda", "--out", str(out)])
    return json.loads((out / "benchmark.json").read_text()), out


def _timing_ok(timing: dict[str, Any], repeats: int = 2) -> None:
    assert len(timing["runs"]) == repeats
    assert 0 <= timing["min"] <= timing["median"] <= timing["max"]
    assert timing["spread"] >= 0


def test_outputs_and_setup(suite: tuple[dict[str, Any], Path]) -> None:
    result, out = suite
    assert {"setup", "devices"} <= set(result)
    setup = result["setup"]
    assert setup["command"].startswith("python scripts/benchmark.py --data synthetic:3000")
    assert setup["n_train"] + setup["n_test"] <= 3000 and setup["n_test"] > 0
    assert list(setup["datasets"]) == ["synthetic-3000", "synthetic-2000"]
    assert setup["torch_threads"] == 1 and setup["threads_from"] in ("default", "CFREC_THREADS")
    for name in ("benchmark.md", "results.md", "scaling.png"):
        assert (out / name).stat().st_size > 0
    results = (out / "results.md").read_text()
    assert results.startswith("## Results") and "### CPU" in results and "#### Targets" in results
    assert "#### Against other libraries on the same split — synthetic-2000" in results
    if not torch.cuda.is_available():
        assert "not available" in result["devices"]["cuda"]["skipped"]


def test_models_section_on_every_data_set(suite: tuple[dict[str, Any], Path]) -> None:
    cpu = suite[0]["devices"]["cpu"]
    for models in (cpu["models"], cpu["other_data"]["synthetic-2000"]["models"]):
        assert set(models) == {"bias", "cf"}
        for row in models.values():
            for key in ("fit", "predict", "rank"):
                _timing_ok(row[key])
            quality = row["quality"]
            assert 0 < quality["rmse"] < 4 and 0 <= quality["accuracy"] <= 1
            assert 0 <= quality["recall@50"] <= 1 and quality["n_ranking_users"] == row["rank_users"] > 0
            assert row["us_per_pair"] > 0 and row["predicts_ratings"] is True
            assert row["peak_rss_mb"] is None  # in-process: no clean memory figure


def test_peers_section(suite: tuple[dict[str, Any], Path]) -> None:
    cpu = suite[0]["devices"]["cpu"]
    for section in (cpu["peers"], cpu["other_data"]["synthetic-2000"]["peers"]):
        rows = section["rows"]
        assert list(rows) == [f"cfrec {name}" for name in peers.CFREC_MODELS] + list(peers.PEERS)
        for name, row in rows.items():
            if "skipped" in row:  # a library that is not installed
                assert "pip install" in row["skipped"] and row["version"] is None
                continue
            assert "error" not in row, row
            _timing_ok(row["fit"])
            assert row["predicts_ratings"] == (row["kind"] == "rating")
            quality = row["quality"]
            assert 0 <= quality["recall@50"] <= 1 and 0 <= quality["ndcg@10"] <= 1
            if row["predicts_ratings"]:
                assert 0 < quality["rmse"] < 4
        ease = rows["EASE (reference)"]
        assert ease["lambda"]["lambda"] in peers.EASE_LAMBDAS
        assert len(ease["lambda"]["valid_ndcg@10"]) == len(peers.EASE_LAMBDAS)


def test_load_section(suite: tuple[dict[str, Any], Path]) -> None:
    load = suite[0]["devices"]["cpu"]["load"]
    assert load["helpers"] == 1 and load["default_threads"] == 1
    assert list(load["threads"])[0] == "1"
    for row in load["threads"].values():
        _timing_ok(row["quiet"])
        _timing_ok(row["loaded"])
        assert row["ratio"] == pytest.approx(row["loaded"]["median"] / row["quiet"]["median"])


def test_notebook_ratios(suite: tuple[dict[str, Any], Path]) -> None:
    notebook = suite[0]["devices"]["cpu"]["notebook"]
    assert set(notebook["loops"]) == {"user", "item", "hnsw"}
    assert all(0 <= row["accuracy"] <= 1 and row["pairs"] == 10 for row in notebook["loops"].values())
    assert set(notebook["variants"]) == set(sections.KNN_VARIANTS)
    for name, row in notebook["variants"].items():
        assert math.isfinite(row["per_pair_ratio"]) and row["per_pair_ratio"] > 0
        assert math.isfinite(row["top_k_ratio"]) and row["top_k_ratio"] > 0
        assert row["loop_top_k"]["users"] == 3
        _timing_ok(row["predict"])
        _timing_ok(row["top_k"])
    for name in ("user_knn_reference", "item_knn_reference"):  # the notebook's formula, vectorized
        assert notebook["variants"][name]["max_abs_diff_vs_loop"] < 1e-4


def test_surprise_section(suite: tuple[dict[str, Any], Path]) -> None:
    surprise = suite[0]["devices"]["cpu"]["surprise"]
    if "skipped" in surprise:
        assert "scikit-surprise" in surprise["skipped"]
        return
    _timing_ok(surprise["svd"]["fit"])
    assert all(0 < rmse < 4 for rmse in surprise["svd"]["rmse"] + surprise["cf"]["rmse"])
    assert surprise["target_rmse"] == min(surprise["svd"]["rmse"])
    assert set(surprise["knn"]) == {"user_knn", "item_knn"}
    if all(surprise["cf_reached"]):
        assert surprise["svd_fit_over_cf_to_target"] > 0


def test_scaling_section(suite: tuple[dict[str, Any], Path]) -> None:
    scaling = suite[0]["devices"]["cpu"]["scaling"]
    assert list(scaling) == ["ml1m"]
    curve = scaling["ml1m"]
    sizes = data.scaling_sizes(1500, 5000)
    assert sizes == [1500, 4743]
    assert len(curve["points"]) == len(sizes) * len(sections.SCALING_MODELS)
    for point in curve["points"]:
        assert point["fit_seconds"] > 0 and point["us_per_pair"] > 0 and 0 < point["test_rmse"] < 4
    slopes = curve["slopes"]
    for name in ("cf_dense", "cf_index", "cf_sparse", "content"):
        assert math.isfinite(slopes[name]["epoch_seconds"])
    for name in sections.SCALING_MODELS:
        assert math.isfinite(slopes[name]["fit_seconds"]) and math.isfinite(slopes[name]["us_per_pair"])
        assert slopes[name]["model_rss_mb"] is None


def test_targets(suite: tuple[dict[str, Any], Path]) -> None:
    targets = suite[0]["devices"]["cpu"]["targets"]
    names = [t["target"] for t in targets]
    assert sum("per pair vs the notebook" in n for n in names) == len(sections.KNN_VARIANTS)
    assert sum("Recall@50 over all" in n for n in names) == 2
    assert sum("busy helpers vs quiet" in n for n in names) == 1
    assert all(isinstance(t["met"], bool) and t["measured"] for t in targets)


def test_render_saved_json_into_readme(suite: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    """--from-json re-renders a saved run, and --readme splices its results between the markers."""
    result, out = suite
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{report.README_START}\nold numbers\n{report.README_END}\nafter\n")
    rendered = tmp_path / "rendered"
    cli.main(["--from-json", str(out / "benchmark.json"), "--out", str(rendered), "--readme", str(readme)])
    results = (out / "results.md").read_text()
    assert (rendered / "results.md").read_text() == results
    assert readme.read_text() == f"# x\n\nbefore\n{report.README_START}\n{results}{report.README_END}\nafter\n"
    assert json.loads((rendered / "benchmark.json").read_text()) == result


def test_older_json_still_renders() -> None:
    """The results saved before the package (one scaling curve, no peers) render as before."""
    saved = json.loads((REPO / "docs" / "benchmark" / "benchmark.json").read_text())
    text = report.report(saved, saved["setup"]["k"], detailed=False)
    assert "#### Scaling on synthetic data" in text and "ML-1M's shape" in text and "| cf_weighted | n/a |" in text


def test_readme_without_markers_is_refused(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="README.md: needs the lines <!-- benchmark results: start -->"):
        report.splice_readme(readme, "## Results\n")
    assert readme.read_text() == "# no markers\n"


def test_helpers() -> None:
    assert data.synthetic_shape(1_000_000) == (6040, 3706)
    assert data.synthetic_shape(4_000_000) == (12080, 7412)
    assert data.synthetic_shape(1_000_000, "ml25m") == (6040, 3706)
    assert data.synthetic_shape(25_000_095, "ml25m") == (162_541, 59_047)
    users, movies = data.synthetic_shape(10_000_000, "ml25m")
    assert 6040 * 10 < users < 162_541 and 3706 * math.sqrt(10) < movies < 59_047  # users grow faster than √ratings
    assert data.scaling_sizes(100_000, 10_000_000) == [100_000, 316_228, 1_000_000, 3_162_278, 10_000_000]
    assert cli.loglog_slope([1e3, 1e4, 1e5], [2.0, 200.0, 20000.0]) == pytest.approx(2.0)
    assert data.data_label("synthetic") == "synthetic-1000000" and data.data_label("/x/ml-100k") == "ml-100k"


def test_models_come_from_every_preset() -> None:
    """A preset added to cfrec/conf/model appears in the models section without editing the benchmark."""
    conf = REPO / "cfrec" / "conf" / "model"
    assert sorted(data.presets()) == sorted(p.stem for p in conf.glob("*.yaml"))
    assert cli.parse_args([]).models == data.presets()
    model, options = data.new_model({"model": "cf_weighted"}, "cpu")
    assert not model.predicts_ratings and options["progress"] is False  # its objective preset, composed
    assert options["optimizer"] == "als" and options["lr"] == 0.02  # the train preset it chooses, over the default
    assert model.config()["objective"]["name"] == "weighted" and model.config()["objective"]["w0"] == 0.3
    model, _ = data.new_model({"model": "cf_weighted", "objective": {"w0": 0.1}}, "cpu")
    assert model.config()["objective"]["w0"] == 0.1 and model.config()["rank"] == 128


def test_reference_ease_against_brute_force() -> None:
    """Each column of B solves min ‖X_j − X b‖² + λ‖b‖² with b_j = 0: (G + λI) restricted to i ≠ j."""
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((40, 12)) < 0.3).astype(np.float32))
    lam = 3.0
    weights = peers.ease_weights(x, lam)
    gram = (x.T @ x).toarray().astype(np.float64)
    for j in range(12):
        rest = np.delete(np.arange(12), j)
        expected = np.linalg.solve(gram[np.ix_(rest, rest)] + lam * np.eye(11), gram[rest, j])
        np.testing.assert_allclose(weights[rest, j], expected, rtol=1e-4, atol=1e-6)
        assert weights[j, j] == 0


def test_peer_model_scores_agree_with_predictions() -> None:
    """`PeerModel`'s two paths (factors, score rows) give predict == score gathered, through cfrec's evaluator."""
    ratings = cfrec.data.synthetic(n_users=60, n_items=30, n_ratings=600, seed=3).ratings
    train, test = cfrec.data.per_user_split(ratings, method="vectorized")
    rng = np.random.default_rng(1)
    factors = peers.PeerModel(train, "f", user_factors=rng.normal(size=(60, 4)), item_factors=rng.normal(size=(30, 4)),
                              user_bias=rng.normal(size=60), item_bias=rng.normal(size=30), global_bias=3.5)
    rows = peers.ease_model(train, 10.0)
    users, items = torch.as_tensor(test.users), torch.as_tensor(test.items)
    for model in (factors, rows):
        full = model.score(torch.arange(60))
        expected = full[users, items]
        if model.predicts_ratings:
            expected = expected.clamp(*model.rating_range)
        torch.testing.assert_close(model.predict(users, items), expected)
        quality = evaluate(model, train, test, ks=(10,))
        assert 0 <= quality["recall@10"] <= 1


@pytest.mark.parametrize("entry", [["-m", "scripts.benchmark"], ["scripts/benchmark/run.py"], ["scripts/benchmark.py"]])
def test_entry_points(entry: list[str]) -> None:
    """`python -m scripts.benchmark`, `python scripts/benchmark/run.py` and the old `python scripts/benchmark.py`."""
    out = subprocess.run([sys.executable, *entry, "--help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "--section" in out and "peers" in out


@pytest.mark.slow
def test_worker_process_reports_memory(tmp_path: Path) -> None:
    """Isolated (the default): one worker process per job, with its own peak memory."""
    cli.main([*TINY, "--sections", "models", "--models", "bias", "--out", str(tmp_path)])
    row = json.loads((tmp_path / "benchmark.json").read_text())["devices"]["cpu"]["models"]["bias"]
    assert "error" not in row
    assert row["peak_rss_mb"] >= row["rss_after_load_mb"] > 0 and row["model_rss_mb"] >= 0
