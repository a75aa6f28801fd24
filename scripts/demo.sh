#!/usr/bin/env bash
# Set up (if needed) and run the demo. Until the Gradio app lands, the demo is the CLI on the
# shared score data: it routes sample queries with the shipped router (or, when none is
# shipped yet, trains a small frozen-encoder router first) and prints its results table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ROUTERDC_DATA="${ROUTERDC_DATA:-$(cd .. && pwd)/shared/data}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
CKPT="${ROUTERDC_CHECKPOINT:-checkpoints/routerdc-minilm}"
if [ ! -f "$CKPT/config.json" ]; then
  CKPT=runs/demo-frozen
  echo "[demo] no shipped router yet: training a frozen-encoder router into $CKPT (a few minutes on CPU)" >&2
  "$PY" -m routerdc train --freeze-encoder --steps 300 --eval-every 100 --eval-max-per-task 200 \
        --output-dir "$CKPT" --test-files routerdc/split2_model7/mmlu_test.json
fi
mkdir -p runs
cat > runs/demo-queries.txt <<'Q'
Janet has 3 apples and buys 5 more. How many apples does she have?
Write a Python function that returns the n-th Fibonacci number.
Which of the following is a prime number? A. 21 B. 27 C. 29 D. 33
以下哪个城市是中国的首都？A. 上海 B. 北京 C. 广州 D. 深圳
Q
"$PY" -m routerdc route --checkpoint "$CKPT" --input runs/demo-queries.txt --output runs/demo-routes.jsonl
"$PY" - <<'PY'
import json
for line in open("runs/demo-routes.jsonl", encoding="utf-8"):
    r = json.loads(line)
    top = sorted(r["probs"].items(), key=lambda kv: -kv[1])[:3]
    print(f"{r['query'][:70]!r}\n  -> {r['llm']}   top-3: " + ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in top))
PY
"$PY" -m routerdc evaluate --checkpoint "$CKPT"
