#!/usr/bin/env bash
# Training runs behind benchmark 3 (twins), benchmark 4 (shuffle) and the BN-sampling and
# distillation ablations, run by two workers of one thread each (on 2 cores this beats one
# 2-thread run for these narrow networks). Runs go to $RUNS (default ~/.cache/subnetsearch-runs);
# each is resumable: rerunning this script continues unfinished runs and skips finished ones.
#   bash benchmarks/train_runs.sh [twins|ablations|all]
set -euo pipefail
cd "$(dirname "$0")/.."
export RUNS="${RUNS:-$HOME/.cache/subnetsearch-runs}"
mkdir -p "$RUNS"
twins='twin-full --fixed-mode full --epochs 10
twin-uniform2 --fixed-mode uniform:2 --epochs 10
twin-uniform4 --fixed-mode uniform:4 --epochs 10
twin-uniform8 --fixed-mode uniform:8 --epochs 10'
smallest='twin-smallest --fixed-mode smallest --epochs 10'
# Ablations: one epoch each (the CPU budget of one session); compare them with each other only.
ablations='ablation-default --epochs 1
ablation-noshuffle --epochs 1 --no-shuffle
ablation-independent --epochs 1 --sampling independent'
more='ablation-nodistill --epochs 1 --no-distill
ablation-shufflemax --epochs 1 --shuffle-rule max'
case "${1:-all}" in
  twins) jobs="$twins"$'\n'"$smallest" ;;
  ablations) jobs="$ablations"$'\n'"$more" ;;
  all) jobs="$twins"$'\n'"$ablations"$'\n'"$smallest"$'\n'"$more" ;;
  *) echo "usage: $0 [twins|ablations|all]" >&2; exit 2 ;;
esac
# shellcheck disable=SC2016
printf '%s\n' "$jobs" | xargs -P 2 -L 1 bash -c '
  name=$0
  if [ -f "$RUNS/$name/supernet.pt" ]; then echo "$name: done already"; exit 0; fi
  # one process per run folder, even across two invocations of this script: wait for the other
  exec 9>"$RUNS/$name.lock"
  flock -n 9 || { echo "$name: running elsewhere, waiting"; flock 9; }
  if [ -f "$RUNS/$name/supernet.pt" ]; then echo "$name: done elsewhere"; exit 0; fi
  echo "$name: training"
  .venv/bin/subnetsearch train --out "$RUNS/$name" --threads 1 "$@" >> "$RUNS/$name.log" 2>&1 && echo "$name: finished"'
