#!/usr/bin/env bash
# Reproduce the results table: RouterDC over 3 seeds, the lambda=0 and task-id ablations, then one
# evaluation against every LLM, the best single LLM, random, the oracle, the k-NN and MLP baselines
# and the paper's reported row. Every number in results/paper_table.* comes from these commands.
#
#   RECIPE=configs/train_paper.json  the training recipe (the paper's)
#   OUT=runs/table                   where the routers go
#   TRAIN_EXTRA="--device cuda"      extra options for every training run
#   EVAL_EXTRA=""                    extra options for the evaluation (e.g. --test-files ...)
#   RESULTS=results/paper_table      output prefix (.json and .md)
# On a CPU the paper's recipe takes hours per run; on one GPU about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ROUTERDC_DATA="${ROUTERDC_DATA:-$(cd .. && pwd)/shared/data}" HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
RECIPE="${RECIPE:-configs/train_paper.json}" OUT="${OUT:-runs/table}" RESULTS="${RESULTS:-results/paper_table}"
PY=.venv/bin/python
train() { echo "[reproduce] train $*" >&2; "$PY" -m routerdc train --config "$RECIPE" --save-dtype float32 ${TRAIN_EXTRA:-} "$@"; }
for seed in 0 1 2; do train --seed "$seed" --output-dir "$OUT/seed$seed"; done
train --lam 0 --output-dir "$OUT/lam0"
train --group-by task --output-dir "$OUT/task"
mkdir -p "$(dirname "$RESULTS")"
"$PY" -m routerdc evaluate \
  --router "RouterDC (ours)=$OUT/seed0,$OUT/seed1,$OUT/seed2" \
  --router "RouterDC, lambda=0 (no sample-sample loss)=$OUT/lam0" \
  --router "RouterDC, task ids instead of clusters=$OUT/task" \
  --baselines --paper-row --output "$RESULTS.json" --markdown "$RESULTS.md" ${EVAL_EXTRA:-}
# The shipped router: seed 0, as fp16 safetensors shards (the recipe's own output_dir and dtype).
"$PY" -m routerdc export --checkpoint "$OUT/seed0" --output "${SHIP:-checkpoints/routerdc-minilm}" \
  --dtype float16 --max-shard-size 15MB --train-config "$RECIPE"
