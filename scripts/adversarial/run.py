"""Adversarial pass over the apps: bad config values, malformed files, reused folders, failing
sweeps and interrupted runs, each run as a user would (``python -m cfrec.apps.<app>``), each
outcome classified:

- ``clean``: a user mistake refused with one ``cfrec-...:`` line on stderr, no traceback, exit 1
  (or 130 for an interrupt that kept what it should)
- ``ok``: a valid run that finished (exit 0, strict-JSON metrics)
- ``silent``: a bad value that ran to exit 0 (a silent wrong result)
- ``lost``: a run that should have kept work (state, finished jobs, a summary) and did not
- ``signal``: killed by a signal or aborted (``terminate called ...``)
- ``traceback``: a raw traceback shown for a user mistake
- ``other``: anything else (several stderr lines, an unexpected exit code)

    python scripts/adversarial/run.py --out /tmp/adv [--jobs 2] [--only NAME_SUBSTRING]

Prints one line per case and the counts; writes ``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

S = ["data=synthetic", "data.n_users=300", "data.n_items=150", "data.n_ratings=9000", "run.progress=false"]
FAST = ["run.plots=false", "run.tensorboard=false"]
CF = ["model=cf", "model.rank=8", "train.epochs=2"]


@dataclass
class Case:
    name: str
    args: list[str]  # after `python -m`
    expect: str = "error"  # error | ok | interrupt | partial (a sweep/compare with a failing part)
    setup: Callable[[Path], None] | None = None  # prepares files in the case folder first
    interrupt_when: Callable[[Path], bool] | None = None  # SIGINT once this is true
    keeps: list[str] = field(default_factory=list)  # files that must exist afterwards (relative to the case folder)


def train(*args: str) -> list[str]:
    return ["cfrec.apps.train", *args]


def bad(name: str, *overrides: str, base: tuple[str, ...] = (*S, *CF, *FAST)) -> Case:
    return Case(name, train(*base, *overrides, "hydra.run.dir=run"))


BAD_VALUES = [
    bad("index.M=1", "index.M=1"), bad("index.space=hamming", "index.space=hamming"), bad("index.ef=0", "index.ef=0"),
    bad("+index.bogus", "+index.bogus=1"), bad("+eval.bogus", "+eval.bogus=1"), bad("+bogus", "+bogus=1"),
    bad("+run.bogus", "+run.bogus=1"), bad("+train.bogus", "+train.bogus=1"), bad("+split.bogus", "+split.bogus=1"),
    bad("+data.bogus", "+data.bogus=1"), bad("+model.bogus", "+model.bogus=1"),
    bad("seed=-1", "seed=-1"), bad("seed=abc", "seed=abc"), bad("seed=1.5", "seed=1.5"),
    bad("split.n_folds=0", "split=kfold", "split.n_folds=0"), bad("split.fold=7", "split=kfold", "split.fold=7"),
    bad("split.test_ratio=1.5", "split.test_ratio=1.5"), bad("split.test_ratio=0", "split.test_ratio=0"),
    bad("split.method=foo", "split.method=foo"), bad("split.seed=-2", "split.seed=-2"),
    bad("split.min_ratings=abc", "split.min_ratings=abc"), bad("split.name=nope", "split.name=nope"),
    bad("eval.ks=[100000]", "eval.ks=[100000]"), bad("eval.ks=[0]", "eval.ks=[0]"), bad("eval.ks=abc", "eval.ks=abc"),
    bad("eval.ks=[]", "eval.ks=[]"), bad("eval.like_threshold=10", "eval.like_threshold=10"),
    bad("eval.like_threshold=abc", "eval.like_threshold=abc"),
    bad("eval.memory_budget_mb=0", "eval.memory_budget_mb=0"), bad("eval.memory_budget_mb=-5", "eval.memory_budget_mb=-5"),
    bad("eval.tolerance=0", "eval.tolerance=0"), bad("eval.limit=-1", "eval.limit=-1"), bad("eval.ranking=maybe", "eval.ranking=maybe"),
    bad("train.lr=-1", "train.lr=-1"), bad("train.lr=abc", "train.lr=abc"), bad("train.epochs=0", "train.epochs=0"),
    bad("train.epochs=2.5", "train.epochs=2.5"), bad("train.momentum=2", "train.momentum=2"),
    bad("train.momentum=abc", "train.momentum=abc"), bad("train.optimizer=rmsprop", "train.optimizer=rmsprop"),
    bad("train.layout=sparse", "train.layout=sparse"), bad("train.batch_size=0", "train.batch_size=0"),
    bad("train.val_fraction=1.5", "train.val_fraction=1.5"), bad("train.patience=0", "train.patience=0"),
    bad("train.seed=-1", "train.seed=-1"), bad("train.resume=/nonexistent", "train.resume=/nonexistent"),
    bad("train.distributed=true", "train.distributed=true"), bad("train.schedule=foo", "train.schedule=foo"),
    bad("model.rank=-1", "model.rank=-1"), bad("model.rank=abc", "model.rank=abc"), bad("model.l2=abc", "model.l2=abc"),
    bad("model.bias=maybe", "model.bias=maybe"), bad("model.w0=5", "model.w0=5"), bad("model.name=nope", "model.name=nope"),
    bad("user_knn k=100000", "model=user_knn", "model.k=100000", base=(*S, *FAST)), bad("user_knn neighbors=foo", "model=user_knn", "model.neighbors=foo", base=(*S, *FAST)),
    bad("item_knn dim=0", "model=item_knn", "model.dim=0", base=(*S, *FAST)), bad("user_knn hnsw=foo", "model=user_knn", "model.hnsw=foo", base=(*S, *FAST)),
    bad("content year_width=abc", "model=content", "model.year_width=abc", base=(*S, *FAST)),
    bad("data.n_users=0", "data.n_users=0"), bad("data.n_users=abc", "data.n_users=abc"),
    bad("data.n_ratings=10", "data.n_ratings=10"), bad("data.noise=-1", "data.noise=-1"),
    bad("data.n_ratings=1e9", "data.n_ratings=1000000000"),
    bad("device=tpu", "device=tpu"), bad("device=cuda (no GPU)", "device=cuda"),
    bad("run.plots=maybe", "run.plots=maybe"),
    bad("data=movielens root missing", "data=movielens", "data.root=/nonexistent", base=(*CF, *FAST)),
    bad("data=csv path missing", "data=csv", "data.path=/nonexistent.csv", base=(*CF, *FAST)),
    bad("data=nope", "data.name=nope", base=(*CF, *FAST)),
    Case("model=nope (hydra group)", train(*S, "model=nope", "hydra.run.dir=run")),
    Case("compare.only=[nope]", ["cfrec.apps.compare", *S, "compare.only=[nope]", "hydra.run.dir=run"]),
    Case("+compare.bogus", ["cfrec.apps.compare", *S, "+compare.bogus=1", "hydra.run.dir=run"]),
    Case("compare.head=-1", ["cfrec.apps.compare", *S, "compare.head=-1", "hydra.run.dir=run"]),
    Case("compare train.epochs=0", ["cfrec.apps.compare", *S, "train.epochs=0", "hydra.run.dir=run"]),
    Case("compare train.resume", ["cfrec.apps.compare", *S, "compare.only=[bias]", "train.resume=run", "hydra.run.dir=run2"]),
]


def write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return setup


TINY_CSV = "userId,movieId,rating\n" + "".join(f"{u},{i},{(u * i) % 5 + 1}\n" for u in range(1, 11) for i in range(1, 4))


def csv_case(name: str, text: str | bytes, *extra: str, model: tuple[str, ...] = ("model=cf",)) -> Case:
    return Case(name, train("data=csv", "data.path=r.csv", *model, "train.epochs=2", "run.progress=false", *extra,
                            "hydra.run.dir=run"), setup=write("r.csv", text))


MALFORMED = [
    csv_case("csv garbage row", "userId,movieId,rating\n1,2,5\nthis is not,a,rating\n"),
    csv_case("csv empty", ""),
    csv_case("csv header only", "userId,movieId,rating\n"),
    csv_case("csv binary", bytes(range(256)) * 8),
    csv_case("csv rating=five", "userId,movieId,rating\n1,2,five\n"),
    csv_case("csv missing column", "userId,movieId\n1,2\n"),
    csv_case("csv 10 users x 3 ratings", TINY_CSV),
    csv_case("csv one rating", "userId,movieId,rating\n1,1,4\n"),
    csv_case("csv latin-1 bytes", "userId,movieId,rating\n1,2,5\n".encode() + b"\xff\xfe,1,3\n"),
    csv_case("csv out of scale", "userId,movieId,rating\n1,2,50\n", "data.scale=[1,5]"),
    Case("ratings.dat bad line", train("data=movielens", "data.root=ml", "model=bias", "run.progress=false",
                                       "hydra.run.dir=run"), setup=write("ml/ratings.dat", "1::2::5::978300760\nbad\n")),
    Case("ratings.dat empty", train("data=movielens", "data.root=ml", "model=bias", "run.progress=false",
                                    "hydra.run.dir=run"), setup=write("ml/ratings.dat", "")),
]


def reused(folder: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cfrec.apps.train", *S, "model=bias", *FAST, "hydra.run.dir=run"],
                          cwd=folder, capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr


def interrupted_first(folder: Path) -> None:
    """A cf run stopped by Ctrl-C after its first epoch: the folder to resume from."""
    args = [sys.executable, "-m", "cfrec.apps.train", *S, "model=cf", "train.epochs=200", "train.batch_size=256",
            *FAST, "hydra.run.dir=first"]
    process = subprocess.Popen(args, cwd=folder, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (folder / "first" / "train_state.pt").exists() and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)


RUNS = [
    Case("ok: cf", train(*S, *CF, "hydra.run.dir=run"), expect="ok"),
    Case("ok: bias", train(*S, "model=bias", *FAST, "hydra.run.dir=run"), expect="ok"),
    Case("ok: user_knn prediction ranking", train(*S, "model=user_knn", "model.ranking=prediction", *FAST,
                                                 "eval.memory_budget_mb=1", "hydra.run.dir=run"), expect="ok"),
    Case("ok: like_threshold=5 (few liked)", train(*S, "model=bias", *FAST, "eval.like_threshold=5", "hydra.run.dir=run"),
         expect="ok"),
    Case("reused run folder", train(*S, "model=bias", "model.reg_user=3", *FAST, "hydra.run.dir=run"), setup=reused,
         keeps=["run/metrics.json", "run/model.pt"]),
    Case("sweep with a diverging job", train("-m", *S, "model=cf", "train.epochs=3", "train.lr=0.01,1e9,0.02", *FAST,
                                             "hydra.sweep.dir=sweep"), expect="partial",
         keeps=["sweep/summary.csv", "sweep/0/metrics.json", "sweep/2/metrics.json", "sweep/1/FAILED"]),
    Case("sweep with an invalid job", train("-m", *S, "model=cf", "train.epochs=2", "model.rank=8,-1,16", *FAST,
                                            "hydra.sweep.dir=sweep"), expect="partial",
         keeps=["sweep/summary.csv", "sweep/0/metrics.json", "sweep/2/metrics.json", "sweep/1/FAILED"]),
    Case("compare with a diverging model", ["cfrec.apps.compare", *S, "compare.only=[bias,cf,popularity]", "train.epochs=3",
                                            "train.lr=1e9", "hydra.run.dir=run"], expect="partial",
         keeps=["run/comparison.csv", "run/comparison.md", "run/metrics.json"]),
    Case("Ctrl-C in training", train(*S, "model=cf", "train.epochs=200", "train.batch_size=256", *FAST, "hydra.run.dir=run"),
         expect="interrupt", interrupt_when=lambda f: (f / "run" / "train_state.pt").exists(), keeps=["run/train_state.pt"]),
    Case("Ctrl-C in evaluation", train("data=synthetic", "data.n_users=3000", "data.n_items=200", "data.n_ratings=30000",
                                       "run.progress=false", *CF, "train.epochs=1", "eval.memory_budget_mb=0.002",
                                       *FAST, "hydra.run.dir=run"),
         expect="interrupt", interrupt_when=lambda f: (f / "run" / "model.json").exists(), keeps=["run/model.pt"]),
    Case("Ctrl-C in a sweep", train("-m", *S, "model=cf", "train.epochs=300", "train.batch_size=256", "model.rank=4,8", *FAST,
                                    "hydra.sweep.dir=sweep"),
         expect="interrupt", interrupt_when=lambda f: (f / "sweep" / "0" / "train_state.pt").exists(),
         keeps=["sweep/0/train_state.pt", "sweep/summary.csv"]),
    Case("Ctrl-C in compare", ["cfrec.apps.compare", "data=synthetic", "data.n_users=2000", "data.n_items=200",
                               "data.n_ratings=20000", "run.progress=false", "compare.only=[bias,popularity,cf]",
                               "train.epochs=300", "train.batch_size=256", "hydra.run.dir=run"],
         expect="interrupt", interrupt_when=lambda f: (f / "run" / "true_vs_predicted_bias.png").exists(),
         keeps=["run/comparison.csv", "run/metrics.json"]),
    Case("resume with train.optimizer=sgd", train(*S, "model=cf", "train.epochs=200", "train.batch_size=256",
                                                  "train.optimizer=sgd", *FAST, "train.resume=first", "hydra.run.dir=run"),
         setup=interrupted_first, keeps=["first/train_state.pt"]),
    Case("resume with train.val_fraction=0.1", train(*S, "model=cf", "train.epochs=200", "train.batch_size=256",
                                                     "train.val_fraction=0.1", *FAST, "train.resume=first",
                                                     "hydra.run.dir=run"), setup=interrupted_first),
    Case("resume in place, more epochs", train(*S, "model=cf", "train.epochs=3", "train.batch_size=256", *FAST,
                                               "train.resume=first", "hydra.run.dir=first"),
         setup=interrupted_first, expect="ok"),
]

ENV = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}


def strict_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        return True
    except (OSError, ValueError):
        return False


def run_case(case: Case, root: Path) -> dict:
    folder = root / "".join(c if c.isalnum() else "_" for c in case.name)
    folder.mkdir(parents=True, exist_ok=True)
    if case.setup:
        case.setup(folder)
    start = time.time()
    process = subprocess.Popen([sys.executable, "-m", *case.args], cwd=folder, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    if case.interrupt_when:
        while not case.interrupt_when(folder) and process.poll() is None and time.time() - start < 300:
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=600)
    rc = process.returncode
    text = out + err
    lines = err.strip().splitlines()
    one_line = len(lines) == 1 and lines[0].startswith("cfrec-")
    kept = all((folder / k).exists() for k in case.keeps)
    if rc < 0 or rc in (134, 139) or "terminate called" in text:
        outcome = "signal"
    elif case.expect == "ok":
        metrics = [p for p in folder.rglob("metrics.json")]
        outcome = "ok" if rc == 0 and metrics and all(strict_json(p) for p in metrics) else (
            "traceback" if "Traceback" in text else "other")
    elif "Traceback" in text:
        outcome = "traceback"
    elif rc == 0:
        outcome = "silent"
    elif not kept:
        outcome = "lost"
    elif case.expect == "interrupt":
        outcome = "clean" if rc == 130 and one_line else "other"
    elif case.expect == "partial":
        summary = folder / ("sweep/summary.csv" if "sweep" in case.keeps[0] else "run/comparison.csv")
        outcome = "clean" if rc == 1 and summary.is_file() and "failed" in summary.read_text() else "lost"
    else:
        outcome = "clean" if rc in (1, 2) and (one_line or _hydra_one_line(err)) else "other"
    return {"case": case.name, "outcome": outcome, "rc": rc, "seconds": round(time.time() - start, 1),
            "stderr": err.strip()[-600:]}


def _hydra_one_line(err: str) -> bool:
    """Hydra's own compose errors (an unknown config group option): its short message, no traceback."""
    return "HYDRA_FULL_ERROR" in err and "Traceback" not in err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", default=None)
    args = parser.parse_args()
    cases = [c for c in [*BAD_VALUES, *MALFORMED, *RUNS] if args.only is None or args.only in c.name]
    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda c: run_case(c, args.out), cases))
    counts: dict[str, int] = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        last = r["stderr"].splitlines()[-1] if r["stderr"] else ""
        print(f"{r['outcome']:9s} rc={r['rc']:<4} {r['seconds']:6.1f}s  {r['case']}: {last[:160]}")
    print("counts:", json.dumps(counts, sort_keys=True))
    (args.out / "results.json").write_text(json.dumps({"counts": counts, "results": results}, indent=2))


if __name__ == "__main__":
    main()
