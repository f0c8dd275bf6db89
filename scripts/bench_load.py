"""Loading speed and memory: `cfrec.data.load` against pandas' `read_csv` on an ML-25M-shaped file.

Generates (under ``--work``, default ``runs/bench_load``; never committed) ``--ratings`` ratings
(default 25,000,095, ML-25M's count) by 162,541 users on 59,047 movies, Zipf-like movie
popularity and log-normal user activity, sorted by user then movie as ML-25M is, in two
layouts: ``csv/ratings.csv`` (``userId,movieId,rating,timestamp``, half stars) and
``dat/ratings.dat`` (ML-1M's ``::`` layout, whole stars). Then, for each layout, times
``pandas.read_csv`` (C engine; ``sep="::"`` needs the python engine, so the ``::`` baseline
reads with ``sep=":"`` and drops the empty columns, which is what a fast reader must do) and
``cfrec.data.load(folder)``, each in a fresh subprocess that reports its wall time and its
peak resident memory (VmHWM from ``/proc/self/status``, imports included). Writes
``load.md`` and ``load.json`` to ``--out``.

    python scripts/bench_load.py --out docs/benchmark            # full size: minutes, ~2 GB disk
    python scripts/bench_load.py --ratings 20000 --out /tmp/b    # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_USERS, N_MOVIES, N_RATINGS = 162_541, 59_047, 25_000_095

# Each measurement runs in its own interpreter, so that peak memory is that of one load.
CHILD = r"""
import json, sys, time
kind, path = sys.argv[1], sys.argv[2]
if kind == "pandas":
    import numpy as np, pandas as pd
    start = time.perf_counter()
    if path.endswith(".dat"):  # "::" is two single-character separators around an empty field
        frame = pd.read_csv(path, sep=":", header=None, usecols=[0, 2, 4, 6], engine="c",
                            dtype={0: np.int64, 2: np.int64, 4: np.float64, 6: np.int64})
    else:
        frame = pd.read_csv(path, engine="c",
                            dtype={"userId": np.int64, "movieId": np.int64, "rating": np.float64, "timestamp": np.int64})
    seconds, rows = time.perf_counter() - start, len(frame)
else:
    import cfrec.data
    start = time.perf_counter()
    ratings = cfrec.data.load(path)
    seconds, rows = time.perf_counter() - start, len(ratings)
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
print(json.dumps({"seconds": seconds, "peak_mib": peak, "rows": rows}))
"""


def generate(folder: Path, n_ratings: int, seed: int = 0) -> dict[str, Path]:
    """Write ``csv/ratings.csv`` and ``dat/ratings.dat`` under ``folder`` (reused if present)."""
    scale = n_ratings / N_RATINGS
    n_users = max(10, int(N_USERS * scale**0.5))
    n_movies = max(10, int(N_MOVIES * scale**0.5))
    files = {"csv": folder / "csv" / "ratings.csv", "dat": folder / "dat" / "ratings.dat"}
    stamp = folder / f"generated-{n_ratings}-{seed}"
    if stamp.is_file() and all(f.is_file() for f in files.values()):
        return files
    rng = np.random.default_rng(seed)
    popularity = rng.permutation(1.0 / np.arange(1, n_movies + 1) ** 1.1)
    popularity /= popularity.sum()
    activity = rng.lognormal(0.0, 1.2, n_users)
    activity /= activity.sum()
    # distinct (user, movie) pairs: drawn by activity × popularity, then topped up with uniform
    # movies (few collisions, so two or three rounds suffice)
    keys = np.unique(rng.choice(n_users, n_ratings, p=activity) * np.int64(n_movies) + rng.choice(n_movies, n_ratings, p=popularity))
    while len(keys) < n_ratings:
        extra = int((n_ratings - len(keys)) * 1.05) + 100
        keys = np.union1d(keys, rng.choice(n_users, extra, p=activity) * np.int64(n_movies) + rng.integers(0, n_movies, extra))
    keys = np.sort(rng.choice(keys, size=n_ratings, replace=False))  # by user, then movie, as ML-25M
    users, movies = keys // n_movies + 1, keys % n_movies + 1
    del keys
    taste = rng.normal(3.5, 0.5, n_users)[users - 1] + rng.normal(0, 0.4, n_movies)[movies - 1]
    level = np.clip(np.round(2 * (taste + rng.normal(0, 0.9, n_ratings))), 1, 10).astype(np.int64) - 1
    del taste
    timestamps = rng.integers(789_652_009, 1_574_327_703, n_ratings)
    half = np.array([f"{s / 2:.1f}" for s in range(1, 11)])  # 0.5 … 5.0, as ML-25M writes them
    whole = np.array([str((s + 1) // 2) for s in range(1, 11)])  # 1 … 5, as ML-1M
    _write(files["csv"], "userId,movieId,rating,timestamp\n", ",", users, movies, half, level, timestamps)
    _write(files["dat"], "", "::", users, movies, whole, level, timestamps)
    stamp.write_text("")
    return files


def _write(path: Path, header: str, sep: str, users, movies, labels, level, timestamps, chunk: int = 2_000_000) -> None:
    """Text rows in chunks: pyarrow's CSV writer when installed, else numpy string arithmetic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import pyarrow as pa
        from pyarrow import csv as pacsv
    except ImportError:
        pa = None
    with open(path, "wb") as out:
        out.write(header.encode())
        for start in range(0, len(users), chunk):
            part = slice(start, start + chunk)
            if pa is not None:
                table = pa.table({"u": users[part], "m": movies[part], "r": pa.array(labels).take(pa.array(level[part])),
                                  "t": timestamps[part]})
                sink = pa.BufferOutputStream()
                pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, delimiter="\x1f", quoting_style="none"))
                text = sink.getvalue().to_pybytes()
            else:
                columns = [users[part].astype(str), movies[part].astype(str), labels[level[part]], timestamps[part].astype(str)]
                rows = columns[0]
                for column in columns[1:]:
                    rows = np.char.add(np.char.add(rows, "\x1f"), column)
                text = ("\n".join(rows.tolist()) + "\n").encode()
            out.write(text.replace(b"\x1f", sep.encode()))


def measure(kind: str, path: Path) -> dict[str, float]:
    """Seconds and peak MiB of one load in a fresh interpreter."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    target = str(path if kind == "pandas" else path.parent)
    done = subprocess.run([sys.executable, "-c", CHILD, kind, target], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} on {target} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    """CPUs, load average and the fast reader's presence: timings on a shared machine vary."""
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"] * 3
    try:
        import pyarrow

        reader = f"pyarrow {pyarrow.__version__}"
    except ImportError:
        reader = "no pyarrow (strict parser only)"
    return f"{os.cpu_count()} CPUs, load average {' '.join(load)} at the start, {reader}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"


def table(results: dict[str, dict[str, dict[str, float]]], n_ratings: int, sizes: dict[str, int], where: str) -> str:
    """The markdown report."""
    lines = [
        f"# Loading {n_ratings:,} ratings: `cfrec.data.load` against `pandas.read_csv`",
        "",
        "Generated by `scripts/bench_load.py` (ML-25M-shaped synthetic file; each load in a fresh process;",
        "peak = VmHWM, imports included; time = the load call only, imports excluded).",
        f"Machine: {where}.",
        "",
        "| layout | file MiB | pandas s | pandas peak MiB | cfrec s | cfrec peak MiB | time ratio | memory ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for layout, pair in results.items():
        p, c = pair["pandas"], pair["cfrec"]
        lines.append(
            f"| {layout} | {sizes[layout] / 2**20:,.0f} | {p['seconds']:.2f} | {p['peak_mib']:,.0f} | {c['seconds']:.2f} | "
            f"{c['peak_mib']:,.0f} | {c['seconds'] / p['seconds']:.2f}× | {c['peak_mib'] / p['peak_mib']:.2f}× |"
        )
    lines += [
        "",
        "`cfrec.data.load` returns a complete `Ratings` (validated ids, ratings in scale, timestamps,",
        "duplicate pairs resolved, dense id maps); `pandas.read_csv` only parses. The ratings file is",
        "parsed by `pyarrow.csv` with declared column types (`cfrec/data/fast.py`; `::` as `:` with an",
        "empty null-typed column between fields); any field it refuses sends the file to the strict",
        "line-by-line parser (`cfrec/data/parsing.py`), which names the file and line. Without pyarrow",
        "every file takes the strict path (correct, slower). Rerun: `python scripts/bench_load.py --out docs/benchmark`.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratings", type=int, default=N_RATINGS, help="number of ratings (default: ML-25M's)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_load"), help="where the generated files go")
    parser.add_argument("--out", type=Path, required=True, help="folder for load.md and load.json")
    parser.add_argument("--repeats", type=int, default=1, help="runs per measurement; the fastest is kept")
    args = parser.parse_args()
    where = machine()
    start = time.perf_counter()
    files = generate(args.work / f"n{args.ratings}", args.ratings)
    print(f"files ready in {time.perf_counter() - start:.1f} s: {', '.join(map(str, files.values()))}", flush=True)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for layout, path in files.items():
        results[layout] = {}
        for kind in ("pandas", "cfrec"):
            runs = [measure(kind, path) for _ in range(args.repeats)]
            best = min(runs, key=lambda r: r["seconds"])
            best["peak_mib"] = min(r["peak_mib"] for r in runs)
            if best["rows"] != args.ratings:
                raise RuntimeError(f"{kind} read {best['rows']} rows of {path}, expected {args.ratings}")
            results[layout][kind] = best
            print(f"{layout:4s} {kind:7s} {best['seconds']:7.2f} s {best['peak_mib']:8.0f} MiB", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = {layout: path.stat().st_size for layout, path in files.items()}
    report = table(results, args.ratings, sizes, where)
    (args.out / "load.md").write_text(report)
    (args.out / "load.json").write_text(
        json.dumps({"ratings": args.ratings, "machine": where, "sizes": sizes, "results": results}, indent=1)
    )
    print(report)


if __name__ == "__main__":
    main()
