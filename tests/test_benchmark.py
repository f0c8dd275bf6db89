"""The benchmark suite (scripts/benchmark.py) on tiny synthetic data: the JSON's structure and sane
numbers. No timing assertions: speed claims live in the benchmark's own output."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import benchmark  # noqa: E402

TINY = [
    "--data", "synthetic:3000", "--repeats", "2", "--warmup", "0", "--models", "bias", "cf",
    "--loop-pairs", "10", "--loop-users", "3", "--min-ratings", "1500", "--max-ratings", "5000", "--scaling-epochs", "1",
]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """Every section, in this process, on CPU, plus a CUDA request that skips where there is no GPU."""
    out = tmp_path_factory.mktemp("bench")
    benchmark.main([*TINY, "--no-isolate", "--device", "cpu", "cuda", "--out", str(out)])
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
    for name in ("benchmark.md", "results.md", "scaling.png"):
        assert (out / name).stat().st_size > 0
    results = (out / "results.md").read_text()
    assert results.startswith("## Results") and "### CPU" in results and "#### Targets" in results
    if not torch.cuda.is_available():
        assert "not available" in result["devices"]["cuda"]["skipped"]


def test_models_section(suite: tuple[dict[str, Any], Path]) -> None:
    models = suite[0]["devices"]["cpu"]["models"]
    assert set(models) == {"bias", "cf"}
    for row in models.values():
        for key in ("fit", "predict", "rank"):
            _timing_ok(row[key])
        quality = row["quality"]
        assert 0 < quality["rmse"] < 4 and 0 <= quality["accuracy"] <= 1
        assert 0 <= quality["recall@50"] <= 1 and quality["n_ranking_users"] == row["rank_users"] > 0
        assert row["us_per_pair"] > 0
        assert row["peak_rss_mb"] is None  # in-process: no clean memory figure


def test_notebook_ratios(suite: tuple[dict[str, Any], Path]) -> None:
    notebook = suite[0]["devices"]["cpu"]["notebook"]
    assert set(notebook["loops"]) == {"user", "item", "hnsw"}
    assert all(0 <= row["accuracy"] <= 1 and row["pairs"] == 10 for row in notebook["loops"].values())
    assert set(notebook["variants"]) == set(benchmark.KNN_VARIANTS)
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
    sizes = benchmark.scaling_sizes(1500, 5000)
    assert sizes == [1500, 4743]
    assert len(scaling["points"]) == len(sizes) * len(benchmark.SCALING_MODELS)
    for point in scaling["points"]:
        assert point["fit_seconds"] > 0 and point["us_per_pair"] > 0 and 0 < point["test_rmse"] < 4
    slopes = scaling["slopes"]
    for name in ("cf_dense", "cf_index", "content"):
        assert math.isfinite(slopes[name]["epoch_seconds"])
    for name in benchmark.SCALING_MODELS:
        assert math.isfinite(slopes[name]["fit_seconds"]) and math.isfinite(slopes[name]["us_per_pair"])
        assert slopes[name]["model_rss_mb"] is None


def test_targets(suite: tuple[dict[str, Any], Path]) -> None:
    targets = suite[0]["devices"]["cpu"]["targets"]
    names = [t["target"] for t in targets]
    assert sum("per pair vs the notebook" in n for n in names) == len(benchmark.KNN_VARIANTS)
    assert sum("Recall@50 over all" in n for n in names) == 2
    assert all(isinstance(t["met"], bool) and t["measured"] for t in targets)


def test_render_saved_json_into_readme(suite: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    """--from-json re-renders a saved run, and --readme splices its results between the markers."""
    result, out = suite
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{benchmark.README_START}\nold numbers\n{benchmark.README_END}\nafter\n")
    rendered = tmp_path / "rendered"
    benchmark.main(["--from-json", str(out / "benchmark.json"), "--out", str(rendered), "--readme", str(readme)])
    results = (out / "results.md").read_text()
    assert (rendered / "results.md").read_text() == results
    assert readme.read_text() == f"# x\n\nbefore\n{benchmark.README_START}\n{results}{benchmark.README_END}\nafter\n"
    assert json.loads((rendered / "benchmark.json").read_text()) == result


def test_readme_without_markers_is_refused(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="README.md: needs the lines <!-- benchmark results: start -->"):
        benchmark.splice_readme(readme, "## Results\n")
    assert readme.read_text() == "# no markers\n"


def test_helpers() -> None:
    assert benchmark.synthetic_shape(1_000_000) == (6040, 3706)
    assert benchmark.synthetic_shape(4_000_000) == (12080, 7412)
    assert benchmark.scaling_sizes(100_000, 10_000_000) == [100_000, 316_228, 1_000_000, 3_162_278, 10_000_000]
    assert benchmark.loglog_slope([1e3, 1e4, 1e5], [2.0, 200.0, 20000.0]) == pytest.approx(2.0)


@pytest.mark.slow
def test_worker_process_reports_memory(tmp_path: Path) -> None:
    """Isolated (the default): one worker process per job, with its own peak memory."""
    benchmark.main([*TINY, "--sections", "models", "--models", "bias", "--out", str(tmp_path)])
    row = json.loads((tmp_path / "benchmark.json").read_text())["devices"]["cpu"]["models"]["bias"]
    assert "error" not in row
    assert row["peak_rss_mb"] >= row["rss_after_load_mb"] > 0 and row["model_rss_mb"] >= 0
