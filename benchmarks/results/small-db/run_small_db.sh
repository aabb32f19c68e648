#!/usr/bin/env bash
# The small-database measurement of issue 24 item 4, one training at a time:
#   run_small_db.sh REPO OUT [SIZES] [SEEDS]
# For each size N (synthetic recordings) and seed s: `edge-lung data synth DB --recordings N --seed s`;
# the default CLI recipe `edge-lung train --data DB --backbone tiny --seeds s` (backbone stage, its val
# Score from config.json's "best"); then the demo's second stage on that backbone, LungAdapter + SAM + WRS
# for DEMO_ADAPTER_EPOCHS (6) epochs, scored by `edge-lung evaluate --split test`. REPO is the checkout
# whose code runs (PYTHONPATH), so the same script measures the old and the new code.
# One JSON line per (N, s) goes to OUT/results.jsonl.
set -euo pipefail
repo=$1; out=$2; sizes=${3:-"60 100"}; seeds=${4:-"0 1 2"}
bin=/work/main/.venv/bin
export PYTHONPATH=$repo OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} EDGE_LUNG_CACHE_DIR=$out/cache
mkdir -p "$out"
for n in $sizes; do
  for s in $seeds; do
    db=$out/db/synth$n-s$s
    [ -d "$db" ] || "$bin/edge-lung" data synth "$db" --recordings "$n" --seed "$s" >/dev/null
    run=$out/runs/synth$n-s$s
    rm -rf "$run"; mkdir -p "$run"
    t0=$(date +%s)
    (cd "$repo" && "$bin/edge-lung" train --data "$db" --backbone tiny --out "$run/backbone" --seeds "$s" \
      --no-progress > "$run/backbone.log" 2>&1)
    t1=$(date +%s)
    (cd "$repo" && "$bin/edge-lung" train --data "$db" --backbone "$run/backbone/model/backbone" --adapter lung \
      --optimizer sam --sampler wrs --epochs 6 --out "$run/adapter" --seeds "$s" --no-progress \
      > "$run/adapter.log" 2>&1)
    t2=$(date +%s)
    (cd "$repo" && "$bin/edge-lung" evaluate "$run/adapter" --split test --json > "$run/adapter-test.json")
    "$bin/python" - "$n" "$s" "$run" "$((t1 - t0))" "$((t2 - t1))" >> "$out/results.jsonl" <<'PY'
import json, sys
n, s, run, t_bb, t_ad = sys.argv[1:]
bb = json.load(open(f"{run}/backbone/config.json"))
ad = json.load(open(f"{run}/adapter/config.json"))
test = json.load(open(f"{run}/adapter-test.json"))
print(json.dumps({"recordings": int(n), "seed": int(s), "train_cycles": bb["train_cycles"],
                  "backbone_val_score": bb["best"]["val"]["score"], "backbone_best_epoch": bb["best"]["epoch"],
                  "backbone_batch_size": bb.get("batch_size") or bb["train"]["batch_size"], "adapter_batch_size": ad.get("batch_size") or ad["train"]["batch_size"], "backbone_seconds": int(t_bb),
                  "adapter_val_score": ad["best"]["val"]["score"], "adapter_test_score": test["score"],
                  "adapter_test_sp": test["specificity"], "adapter_test_se": test["sensitivity"],
                  "adapter_seconds": int(t_ad), "optimizer_steps": bb.get("optimizer_steps")}))
PY
    tail -1 "$out/results.jsonl"
  done
done
