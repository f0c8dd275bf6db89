"""Jobs: one measurement each, run in a worker process of its own (its peak memory is its own) or,
``isolate=False``, in this process."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

import benchtools as bt
from cfrec.data import Ratings
from cfrec.threads import apply_threads

RUN = Path(__file__).resolve().with_name("run.py")


@dataclass(frozen=True)
class Job:
    """One measurement: a `sections.MEASURES` name, its keyword options, the device, the data key, the threads."""

    section: str
    data: str
    device: str
    options: dict[str, Any]
    threads: int = 1


def run_job(job: Job, train: Ratings, test: Ratings) -> dict[str, Any]:
    """Run ``job`` here (its threads applied); adds the load average before/after and, on CUDA, the peak GPU memory."""
    from .sections import MEASURES

    apply_threads(job.threads)
    cuda = torch.device(job.device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(job.device)
    load_before = os.getloadavg()[0]
    result = MEASURES[job.section](train, test, device=job.device, **job.options)
    result["load_average"] = [load_before, os.getloadavg()[0]]
    result["torch_threads"] = torch.get_num_threads()
    if cuda:
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(job.device) / 2**20
    return result


class Runner:
    """Runs jobs in worker processes (``isolate``: clean peak memory) or in this process."""

    def __init__(self, isolate: bool, threads: int, workdir: Path):
        self.isolate, self.threads, self.workdir = isolate, threads, workdir
        self._splits: dict[str, tuple[Ratings, Ratings]] = {}
        self._count = 0

    def register(self, key: str, split: tuple[Ratings, Ratings]) -> None:
        """Make ``split`` available to jobs as ``key`` (pickled for workers, kept in memory otherwise)."""
        if self.isolate:
            with open(self.workdir / f"{key}.pkl", "wb") as handle:
                pickle.dump(split, handle, protocol=pickle.HIGHEST_PROTOCOL)
        else:
            self._splits[key] = split

    def run(self, job: Job) -> dict[str, Any]:
        """The job's result; a worker that fails gives ``{"error": ...}`` instead of stopping the suite."""
        if not self.isolate:
            return {**run_job(job, *self._splits[job.data]), "peak_rss_mb": None, "model_rss_mb": None}
        self._count += 1
        job_file, result_file = self.workdir / f"job{self._count}.json", self.workdir / f"job{self._count}.result.json"
        job_file.write_text(json.dumps({"job": asdict(job), "data": str(self.workdir / f"{job.data}.pkl"),
                                        "result": str(result_file)}))
        status = subprocess.run([sys.executable, str(RUN), "--worker", str(job_file)], env=thread_env(job.threads)).returncode
        if status != 0:
            return {"error": f"worker exited with status {status}", "peak_rss_mb": None, "model_rss_mb": None}
        result = json.loads(result_file.read_text())
        return {**result, "model_rss_mb": result["peak_rss_mb"] - result["rss_after_load_mb"]}

    def forget(self, key: str) -> None:
        """Drop the split registered as ``key``."""
        self._splits.pop(key, None)
        (self.workdir / f"{key}.pkl").unlink(missing_ok=True)


def thread_env(threads: int) -> dict[str, str]:
    """This process's environment with the BLAS/OpenMP thread counts pinned to ``threads``."""
    env = dict(os.environ)
    env.update({var: str(threads) for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    return env


def worker(job_file: Path) -> None:
    """Worker process: load the job's split, run it, write its result with its memory high-water
    marks after loading and at the end (`benchtools.peak_rss_mb`)."""
    spec = json.loads(job_file.read_text())
    job = Job(**spec["job"])
    with open(spec["data"], "rb") as handle:
        train, test = pickle.load(handle)
    bt.prime_torch()
    after_load = bt.peak_rss_mb()
    result = run_job(job, train, test)
    Path(spec["result"]).write_text(json.dumps({**result, "rss_after_load_mb": after_load, "peak_rss_mb": bt.peak_rss_mb()},
                                               default=_plain))


def _plain(value: Any) -> Any:
    """JSON for numpy and torch scalars."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def announce(label: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``, printing the label, its wall time and any error it reports."""
    print(f"{label} ...", flush=True)
    seconds, result = bt.timed(fn)
    error = f" ERROR: {result['error']}" if isinstance(result, dict) and "error" in result else ""
    print(f"{label}: {seconds:.1f} s{error}", flush=True)
    return result
