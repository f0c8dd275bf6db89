#!/usr/bin/env bash
# Start N two-process torchrun jobs of cfrec-train and count how each ended: clean exit, an abort
# ("terminate called without an active exception", a signal) or another failure.
#   bash scripts/adversarial/torchrun_loop.sh N OUT_DIR [extra overrides...]
set -u
n=${1:-10}; out=${2:-/tmp/torchrun_loop}; shift 2 || true
mkdir -p "$out"
ok=0; aborted=0; failed=0
for i in $(seq 1 "$n"); do
  log="$out/job$i.log"
  OMP_NUM_THREADS=1 MPLBACKEND=Agg torchrun --standalone --nproc_per_node=2 -m cfrec.apps.train \
    data=synthetic data.n_users=300 data.n_items=150 data.n_ratings=9000 run.progress=false \
    model=cf train.distributed=true train.epochs=2 run.plots=false "hydra.run.dir=$out/run$i" "$@" >"$log" 2>&1
  rc=$?
  if grep -q -e "terminate called" -e "Signal [0-9]* (SIG" -e "core dumped" "$log" || [ "$rc" -ge 128 ]; then
    aborted=$((aborted + 1)); echo "job $i: ABORT (rc $rc)"
  elif [ "$rc" -ne 0 ]; then
    failed=$((failed + 1)); echo "job $i: failed (rc $rc)"
  else
    ok=$((ok + 1))
  fi
done
echo "torchrun jobs: $n, ok $ok, aborted $aborted, failed $failed"
