"""Reports of a benchmark result: markdown tables (``benchmark.md`` every table, ``results.md`` the
README's "Results" section), ``benchmark.json``, the scaling plot, and the README splice."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .data import shape_law
from .sections import SCALING_MODELS

README_START, README_END = "<!-- benchmark results: start -->", "<!-- benchmark results: end -->"
FEW_SECONDS = 5.0  # "all-users Recall@50 in a few seconds"
LOAD_TARGET = 1.5  # loaded fit ≤ 1.5 × quiet fit with the default threads
SCALING_METRICS = ("epoch_seconds", "fit_seconds", "us_per_pair", "model_rss_mb", "peak_gpu_mb")


# -- cells and tables ---------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 2) -> str:
    """A table cell: None as an em dash, floats with ``digits`` decimals and thousands separators."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _timing(timing: dict[str, Any], digits: int = 2) -> str:
    """Median with the min–max range of the repeats."""
    if len(timing["runs"]) == 1:
        return _fmt(timing["median"], digits)
    return f"{_fmt(timing['median'], digits)} ({_fmt(timing['min'], digits)}–{_fmt(timing['max'], digits)})"


def _table(rows: list[dict[str, Any]]) -> str:
    """A GitHub-flavoured markdown table of dict rows (columns: every key, in first-seen order)."""
    if not rows:
        return "(nothing measured)\n"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cell = lambda value: str(value).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _ok(row: Any) -> bool:
    return isinstance(row, dict) and "error" not in row and "skipped" not in row


def _predicts_ratings(row: dict[str, Any]) -> bool:
    return row.get("predicts_ratings", row.get("config", {}).get("w0") is None)  # older results: the weighted mask


# -- sections -------------------------------------------------------------------------------------------
def models_table(models: dict[str, Any], k: int) -> str:
    """Quality and speed of each model (medians, min–max of the repeats in brackets)."""
    rows, scores_only = [], []
    for name, r in models.items():
        if not _ok(r):
            rows.append({"model": name, "RMSE": r.get("error") or r.get("skipped", "")})
            continue
        q = r["quality"]
        if not _predicts_ratings(r):
            scores_only.append(name)
        rating = (lambda key: "n/a") if name in scores_only else (lambda key: _fmt(q.get(key), 4))
        rows.append({
            "model": name, "RMSE": rating("rmse"), "MAE": rating("mae"), "accuracy": rating("accuracy"),
            "Recall@10": _fmt(q["recall@10"], 4), f"Recall@{k}": _fmt(q[f"recall@{k}"], 4), "NDCG@10": _fmt(q["ndcg@10"], 4),
            "fit s": _timing(r["fit"]), "predict µs/pair": _fmt(r["us_per_pair"], 3),
            f"Recall@{k} all users s": _timing(r["rank"]), "peak RSS MiB": _fmt(r["peak_rss_mb"], 0),
            "model MiB": _fmt(r["model_rss_mb"], 0), **({"peak GPU MiB": _fmt(r["peak_gpu_mb"], 0)} if "peak_gpu_mb" in r else {}),
        })
    note = f"\nn/a: {', '.join(scores_only)} ranks by scores that are not ratings.\n" if scores_only else ""
    return _table(rows) + note


def peers_table(peers: dict[str, Any], k: int) -> str:
    """Peers and cfrec on one split: fit time (interleaved runs), rating and ranking quality by cfrec's evaluator."""
    if not _ok(peers):
        return f"{peers.get('error') or peers.get('skipped')}\n"
    rows, notes = [], []
    for name, r in peers["rows"].items():
        label = name if r.get("library") in ("cfrec", "numpy") or not r.get("version") else f"{name} {r['version']}"
        if not _ok(r):
            rows.append({"model": label, "kind": r.get("kind", ""), "fit s": r.get("error") or r.get("skipped")})
            continue
        q = r["quality"]
        rating = (lambda key: _fmt(q.get(key), 4)) if r["predicts_ratings"] else (lambda key: "n/a")
        rows.append({"model": label, "kind": r["kind"], "fit s": _timing(r["fit"]), "RMSE": rating("rmse"),
                     "accuracy": rating("accuracy"), "Recall@10": _fmt(q["recall@10"], 4),
                     f"Recall@{k}": _fmt(q[f"recall@{k}"], 4), "NDCG@10": _fmt(q["ndcg@10"], 4)})
        if "lambda" in r:
            grid = ", ".join(f"{lam}: {s:.4f}" for lam, s in r["lambda"]["valid_ndcg@10"].items())
            notes.append(f"{name}: λ = {r['lambda']['lambda']:g}, chosen by NDCG@10 on 10 % of each user's train "
                         f"ratings ({grid}; {r['lambda']['seconds']:.1f} s, off the clock).")
    text = _table(rows)
    text += (f"\nEach model's fits ran in turn in one process with {peers['threads']} torch/OpenMP thread(s), "
             "peers and cfrec interleaved round by round; fit s is the median (min–max) of the timed rounds, quality "
             "that of the last fit, all scored by `cfrec.evaluate.evaluate` (n/a: scores that are not ratings).\n")
    return text + "".join(f"\n{note}\n" for note in notes)


def load_table(load: dict[str, Any]) -> str:
    """The default fit with and without CPU-bound helpers, per thread count."""
    if not _ok(load):
        return f"{load.get('error') or load.get('skipped')}\n"
    rows = [{"torch threads": f"{t}{' (default)' if int(t) == load['default_threads'] else ''}",
             "quiet fit s": _timing(r["quiet"]), f"with {load['helpers']} busy helpers s": _timing(r["loaded"]),
             "loaded / quiet": f"{r['ratio']:.2f}×"} for t, r in load["threads"].items()]
    return (_table(rows) + f"\nThe default `{load['model']}` fit; quiet and loaded fits alternate (order swapped every "
            f"round) in one process, the {load['helpers']} helper processes (a Python busy loop each) started before "
            "and stopped after every loaded fit. Other processes on the machine add to both.\n")


def notebook_tables(notebook: dict[str, Any], k: int) -> str:
    """cfrec KNN against the notebook's loops (ratios), and the loops' own accuracy and RMSE."""
    if not _ok(notebook):
        return f"{notebook.get('error') or notebook.get('skipped')}\n"
    rows = [{
        "cfrec variant": name, "notebook loop": r["loop"], "loop ms/pair": _fmt(r["loop_ms_per_pair"], 3),
        "cfrec µs/pair": _fmt(r["us_per_pair"], 3), "× per pair": _fmt(r["per_pair_ratio"], 0),
        "loop ms/user (top-50)": _fmt(r["loop_top_k"]["seconds_per_user"] * 1e3 if "loop_top_k" in r else None, 1),
        f"cfrec ms/user (top-{k})": _fmt(r.get("top_k_ms_per_user"), 3), "× top-K": _fmt(r.get("top_k_ratio"), 0),
        "max abs diff vs loop": _fmt(r.get("max_abs_diff_vs_loop"), 6), "fit s": _fmt(r["fit_seconds"]),
    } for name, r in notebook["variants"].items()]
    pairs = [{"loop": name, "pairs": r["pairs"], "accuracy": _fmt(r["accuracy"], 4), "RMSE": _fmt(r["rmse"], 4)}
             for name, r in notebook["loops"].items()]
    top = next((r["loop_top_k"] for r in notebook["variants"].values() if "loop_top_k" in r), None)
    note = "" if top is None else (f"\nThe notebook's top-50 loop (HNSW user neighbours) ran on the first {top['users']} users "
                                   f"with a liked test movie before each variant's top-K lists (Recall@50 {top['recall@50']:.4f} "
                                   f"on them); cfrec's lists cover all users.\n")
    return (_table(rows) + note + "\nThe notebook's per-pair loops on the first test pairs (its printed figures: user "
            "0.395 / 0.9888, item 0.439 / 0.9708):\n\n" + _table(pairs))


def surprise_tables(surprise: dict[str, Any]) -> str:
    """Surprise against cfrec on the same split: fit time, RMSE, prediction time; CF's time to SVD's RMSE."""
    if not _ok(surprise):
        return f"{surprise.get('error') or surprise.get('skipped')}\n"
    svd, kb, cf = surprise["svd"], surprise["knn_baseline"], surprise["cf"]
    rows = [
        {"model": f"Surprise SVD() {surprise['surprise_version']}", "fit s": _timing(svd["fit"]),
         "RMSE": " / ".join(_fmt(x, 4) for x in svd["rmse"]), "predict µs/pair": _fmt(svd["us_per_pair"], 2)},
        {"model": "Surprise KNNBaseline() (one run)", "fit s": _fmt(kb["fit_seconds"]), "RMSE": _fmt(kb["rmse"], 4),
         "predict µs/pair": _fmt(kb["us_per_pair"], 2)},
        {"model": f"cfrec cf ({len(cf['epochs'][0])} epochs)", "fit s": _timing(cf["fit"]),
         "RMSE": " / ".join(_fmt(x, 4) for x in cf["rmse"]), "predict µs/pair": "—"},
    ]
    rows += [{"model": f"cfrec {name}", "fit s": _timing(r["fit"]), "RMSE": _fmt(r["rmse"], 4),
              "predict µs/pair": _fmt(r["us_per_pair"], 3)} for name, r in surprise["knn"].items()]
    reached = surprise["cf_reached"]
    if "cf_to_target" in surprise:
        line = (f"cfrec CF reaches the best SVD RMSE of the repeats, {surprise['target_rmse']:.4f}, after "
                f"{_timing(surprise['cf_to_target'])} s of fitting (epoch {' / '.join(str(r['epoch']) for r in reached)}; "
                f"test scoring off the clock), against {_timing(svd['fit'])} s for Surprise's SVD fit: Surprise's fit "
                f"takes **{surprise['svd_fit_over_cf_to_target']:.1f}×** cfrec's time to that RMSE.")
    else:
        line = f"cfrec CF did not reach SVD's RMSE {surprise['target_rmse']:.4f} in every repeat ({reached})."
    return _table(rows) + "\n" + line + "\n"


def scaling_by_shape(scaling: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{shape: curve}`` of a scaling section (older results hold one ML-1M-shaped curve)."""
    return {"ml1m": scaling} if "points" in scaling else scaling


def scaling_tables(scaling: dict[str, Any], detailed: bool) -> str:
    """Slopes of each cost against the number of ratings and, in detail, every point; per shape."""
    names = {"epoch_seconds": "s/epoch", "fit_seconds": "fit s", "us_per_pair": "µs/pair",
             "model_rss_mb": "memory above data", "peak_gpu_mb": "peak GPU memory"}
    parts = []
    for shape, curve in scaling_by_shape(scaling).items():
        shown = [m for m in SCALING_METRICS if any(s.get(m) is not None for s in curve["slopes"].values())]
        slopes = [{"model": name, **{f"slope of {names[m]}": _fmt(s[m]) for m in shown}} for name, s in curve["slopes"].items()]
        text = f"Sizes: {curve.get('law') or shape_law(shape)}; learned models train {curve['epochs']} epochs.\n\n" + _table(slopes)
        skipped = sorted({p["skipped"] for p in curve["points"] if "skipped" in p})
        text += "".join(f"\nSkipped: {note}.\n" for note in skipped)
        if detailed:
            rows = [{"ratings": p["ratings"], "users": p["users"], "movies": p["items"], "model": p["model"],
                     "fit s": _fmt(p.get("fit_seconds")), "s/epoch": _fmt(p.get("epoch_seconds"), 3),
                     "µs/pair": _fmt(p.get("us_per_pair"), 3), "peak RSS MiB": _fmt(p.get("peak_rss_mb"), 0),
                     "memory above data MiB": _fmt(p.get("model_rss_mb"), 0), "test RMSE": _fmt(p.get("test_rmse"), 4),
                     "note": p.get("skipped") or p.get("error") or ""} for p in curve["points"]]
            text += "\n" + _table(rows)
        parts.append(text)
    return "\n".join(parts)


def targets_table(targets: list[dict[str, Any]]) -> str:
    rows = [{"target": t["target"], "measured": t["measured"], "wanted": t["wanted"], "met": "yes" if t["met"] else "**no**"}
            for t in targets]
    return _table(rows)


# -- targets ----------------------------------------------------------------------------------------------
def check_targets(sections: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """The issues' speed targets on one device: what was measured, what was wanted, met or not."""
    rows = []
    notebook = sections.get("notebook")
    if _ok(notebook):
        for name, row in notebook["variants"].items():
            ratio = row["per_pair_ratio"]
            rows.append(_target(f"{name} per pair vs the notebook's {row['loop']} loop", ratio, f"{ratio:,.0f}×", "≥ 100×", ratio >= 100))
    for name, row in sections.get("models", {}).items():
        if _ok(row):
            seconds = row["rank"]["median"]
            rows.append(_target(f"{name}: Recall@{k} over all {row['rank_users']:,} test users", seconds,
                                f"{seconds:.2f} s", f"≤ {FEW_SECONDS:g} s", seconds <= FEW_SECONDS))
    surprise = sections.get("surprise")
    if _ok(surprise):
        ratio = surprise.get("svd_fit_over_cf_to_target")
        shown = "not reached" if ratio is None else (
            f"{surprise['cf_to_target']['median']:.2f} s vs {surprise['svd']['fit']['median']:.2f} s ({ratio:.1f}×)")
        rows.append(_target(f"CF reaches Surprise SVD's RMSE {surprise['target_rmse']:.4f} within Surprise's fit time",
                            ratio, shown, "≥ 1× (Surprise fit / CF time)", ratio is not None and ratio >= 1))
    load = sections.get("load")
    if _ok(load):
        row = load["threads"][str(load["default_threads"])]
        rows.append(_target(f"{load['model']} fit with {load['helpers']} busy helpers vs quiet, default "
                            f"{load['default_threads']} thread(s)", row["ratio"],
                            f"{row['loaded']['median']:.2f} s vs {row['quiet']['median']:.2f} s ({row['ratio']:.2f}×)",
                            f"≤ {LOAD_TARGET:g}×", row["ratio"] <= LOAD_TARGET))
    return rows


def _target(name: str, value: float | None, shown: str, wanted: str, met: bool) -> dict[str, Any]:
    return {"target": name, "value": value, "measured": shown, "wanted": wanted, "met": bool(met)}


# -- the whole report ----------------------------------------------------------------------------------
def _datasets(setup: dict[str, Any], sections: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(label, its setup, its sections) of every data set: the first holds every section, the others models and peers."""
    labels = list(setup.get("datasets", {})) or [setup.get("data", "data")]
    first = labels[0]
    yield first, setup.get("datasets", {}).get(first, setup), sections
    for label in labels[1:]:
        yield label, setup["datasets"][label], sections.get("other_data", {}).get(label, {})


def _data_line(d: dict[str, Any], split: str) -> str:
    return (f"`{d['data']}`, {split} split: {d['n_train']:,} train / {d['n_test']:,} test ratings, "
            f"{d['n_users']:,} users × {d['n_items']:,} movies")


def report(result: dict[str, Any], k: int, detailed: bool) -> str:
    """Markdown of a suite run: the README's "Results" section, or (``detailed``) every table."""
    s = result["setup"]
    lines = [
        "## Results", "",
        f"`{s['command']}` at {s['git']}, {s['started']} – {s['finished']}: {s['cpu']}, {s['usable_cpus']} usable CPU(s), "
        f"{s['memory_gb']:.0f} GiB, torch {s['torch']} with {s['torch_threads']} thread(s); load average "
        f"{s['load_average_start'][0]:.2f} at the start and {s['load_average_end'][0]:.2f} at the end (1-minute; the "
        f"machine is shared, so absolute times move — ratios are measured within one process).",
    ]
    if "datasets" in s and len(s["datasets"]) > 1:
        lines += ["", "Data: "
                  + "; ".join(_data_line(d, s["split"]) for d in s["datasets"].values())
                  + f". Timings: {s['warmup']} warm-up run(s), then the median (min–max) of {s['repeats']}."]
    elif "n_train" in s:
        lines += ["", f"Data: {_data_line(s, s['split'])}. Timings: {s['warmup']} warm-up run(s), then the "
                      f"median (min–max) of {s['repeats']}."]
    for device, sections in result["devices"].items():
        lines += ["", f"### {device.upper()}", ""]
        if "skipped" in sections:
            lines.append(sections["skipped"])
            continue
        lines += _device_sections(s, sections, k, detailed)
    return "\n".join(lines).rstrip() + "\n"


def _device_sections(setup: dict[str, Any], sections: dict[str, Any], k: int, detailed: bool) -> list[str]:
    parts = []
    several = len(setup.get("datasets", {})) > 1
    for label, _, data_sections in _datasets(setup, sections):
        on = f" — {label}" if several else ""
        if "models" in data_sections:
            parts += [f"#### Quality and speed of each model{on}", "", models_table(data_sections["models"], k)]
        if "peers" in data_sections:
            parts += [f"#### Against other libraries on the same split{on}", "", peers_table(data_sections["peers"], k)]
    if "notebook" in sections:
        parts += ["#### cfrec KNN against the reference notebook's loops (same process)", "", notebook_tables(sections["notebook"], k)]
    if "surprise" in sections:
        parts += ["#### Against Surprise on the same split (same process, runs alternated)", "", surprise_tables(sections["surprise"])]
    if "load" in sections:
        parts += ["#### Under load: the default fit with busy helper processes", "", load_table(sections["load"])]
    if sections.get("targets"):
        parts += ["#### Targets", "", targets_table(sections["targets"])]
    if "scaling" in sections:
        parts += ["#### Scaling on synthetic data", "", scaling_tables(sections["scaling"], detailed)]
    return parts


def scaling_plot(curve: dict[str, Any], path: Path) -> Path:
    """Log-log panels of one curve's scaling points, each line labelled with its fitted slope."""
    from matplotlib.figure import Figure

    panels = {
        "learned models: seconds per epoch": ("epoch_seconds", ("cf_dense", "cf_index", "cf_sparse", "content")),
        "KNN: fit seconds": ("fit_seconds", ("user_knn", "item_knn")),
        "prediction µs per pair": ("us_per_pair", tuple(SCALING_MODELS)),
        "memory above the loaded data (MiB)": ("model_rss_mb", tuple(SCALING_MODELS)),
    }
    curves = {}
    for title, (metric, models) in panels.items():
        series = {}
        for name in models:
            xy = [(p["ratings"], p[metric]) for p in curve["points"] if p["model"] == name and _ok(p) and (p.get(metric) or 0) > 0]
            slope = curve["slopes"].get(name, {}).get(metric)
            if xy:
                series[name if slope is None else f"{name} (slope {slope:.2f})"] = tuple(zip(*xy))
        if series:
            curves[title] = series
    n = max(len(curves), 1)
    fig = Figure(figsize=(12 if n > 1 else 6, 4.2 * ((n + 1) // 2)))
    axes = fig.subplots((n + 1) // 2, 2 if n > 1 else 1, squeeze=False).ravel()
    for ax, (title, series) in zip(axes, curves.items()):
        for label, (x, y) in series.items():
            ax.loglog(x, y, marker="o", label=label)
        ax.set(title=title, xlabel="ratings")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(curves):]:
        ax.set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


# -- files ------------------------------------------------------------------------------------------------
def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)


def splice_readme(readme: Path, results: str) -> None:
    """Replace the text between `README_START` and `README_END` in ``readme`` with ``results``."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme}: needs the lines {README_START} and {README_END} around its results section")
    write_text(readme, text[: start + len(README_START)] + "\n" + results + text[end:])


def write_outputs(result: dict[str, Any], out: Path, k: int) -> str:
    """benchmark.json, benchmark.md, results.md and a scaling PNG per device and shape into ``out``;
    returns the text of results.md."""
    write_text(out / "benchmark.json", json.dumps(result, indent=2) + "\n")
    texts = {name: report(result, k, detailed) for name, detailed in (("benchmark.md", True), ("results.md", False))}
    for name, text in texts.items():
        write_text(out / name, text)
    for device, sections in result["devices"].items():
        if "scaling" in sections:
            for i, (shape, curve) in enumerate(scaling_by_shape(sections["scaling"]).items()):
                stem = "scaling" + ("" if device == "cpu" else f"-{device}") + ("" if i == 0 else f"-{shape}")
                scaling_plot(curve, out / f"{stem}.png")
    return texts["results.md"]
