"""OpenMP's wait policy under load: the default model's two heads fitted in fresh processes.

    python scripts/bench_omp_wait.py --data ../shared/data/ml-1m --rounds 4

Each round fits, in a fresh process each (``OMP_WAIT_POLICY`` is read when torch loads), with
1 thread (the default policy), 2 threads with passive waiting and 2 threads spinning (the default
policy), first on a quiet machine, then beside ``--helpers`` busy processes (a Python busy loop each).
The fit is `CollaborativeFiltering`'s joint objective without the KNN blend, ``--epochs`` epochs.
Prints one line per fit and the medians; docs/benchmark/under_load.md has a run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

FIT = """
import sys, time, torch
import cfrec.data
from cfrec.models import CollaborativeFiltering
torch.set_num_threads(int(sys.argv[1]))
train = cfrec.data.per_user_split(cfrec.data.load(sys.argv[2])).train
start = time.perf_counter()
CollaborativeFiltering(knn_blend=None).fit(train, {"epochs": int(sys.argv[3]), "progress": False})
print(time.perf_counter() - start)
"""

SETTINGS = {"1 thread": (1, None), "2 threads, passive": (2, "PASSIVE"), "2 threads, spinning": (2, None)}


def fit_seconds(data: str, threads: int, policy: str | None, epochs: int) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    done = subprocess.run([sys.executable, "-c", FIT, str(threads), data, str(epochs)], env=env,
                          capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--helpers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    times: dict[tuple[str, bool], list[float]] = {(name, loaded): [] for name in SETTINGS for loaded in (False, True)}
    print(f"load average at the start: {os.getloadavg()[0]:.2f}", flush=True)
    for round_ in range(1, args.rounds + 1):
        for loaded in (False, True):
            helpers = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.helpers if loaded else 0)]
            time.sleep(1.0 if helpers else 0.0)
            try:
                for name, (threads, policy) in SETTINGS.items():
                    seconds = fit_seconds(args.data, threads, policy, args.epochs)
                    times[name, loaded].append(seconds)
                    print(f"round {round_} {'loaded' if loaded else 'quiet '} {name}: {seconds:.2f} s", flush=True)
            finally:
                for helper in helpers:
                    helper.kill()
                    helper.wait()
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print("| setting | quiet fit s (median) | with helpers s (median) | loaded / quiet |")
    print("| --- | --- | --- | --- |")
    for name in SETTINGS:
        quiet, loaded = statistics.median(times[name, False]), statistics.median(times[name, True])
        print(f"| {name} | {quiet:.2f} | {loaded:.2f} | {loaded / quiet:.2f}× |")


if __name__ == "__main__":
    main()
