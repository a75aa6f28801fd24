#!/usr/bin/env bash
# The README's "Route among your own LLMs" block, end to end on CPU with two tiny random-weight
# Llamas and the tiny local tasks in configs/lm_eval/tiny/: models config -> collect -> cluster ->
# train (frozen encoder) -> calibrate -> serve -> an OpenAI client. Prints each step's seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
W=${1:-.cache/own-llms-workflow}
rm -rf "$W"; mkdir -p "$W"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
t() { local s=$(date +%s.%N); "$@"; printf '[time] %-10s %6.1f s\n' "$STEP" "$(echo "$(date +%s.%N) - $s" | bc)" >&2; }
STEP=models; t $PY - "$W" <<'PY'
import json, sys
sys.path.insert(0, "tests")
from serving_support import tiny_llms
m = tiny_llms()
prices = {"tiny-a": (0.5, 2.0), "tiny-b": (0.03, 0.07)}  # dollars per 1k input / output tokens: collect fills costs
models = [{"name": n, "backend": "transformers", "model": str(p), "prompt_format": "completion",
           "sampling": {"max_tokens": 8}, "cost_per_1k_input": prices[n][0], "cost_per_1k_output": prices[n][1]}
          for n, p in m.items()]
json.dump({"models": models}, open(f"{sys.argv[1]}/models.json", "w"), indent=2)
PY
STEP=collect;   t $PY -m routerdc collect --models-config "$W/models.json" --tasks tiny_mc,tiny_gen \
                  --include-path configs/lm_eval/tiny --output "$W/scores.jsonl" --batch-size 4
STEP=cluster;   t $PY -m routerdc cluster --input "$W/scores.jsonl" --output "$W/clustered.jsonl" --n-clusters 2
STEP=train;     t $PY -m routerdc train --train-files "$W/clustered.jsonl" --output-dir "$W/router" --steps 20 \
                  --batch-size 8 --freeze-encoder --eval-every 0 --samples-per-task 0 >/dev/null
STEP=calibrate; t $PY -m routerdc calibrate --checkpoint "$W/router" --train-files "$W/clustered.jsonl"
$PY -c 'import json, sys; print("llm_cost (mean imported cost per query):", json.load(open(sys.argv[1]))["router"]["llm_cost"])' \
    "$W/router/config.json"
PORT=${PORT:-8011}
STEP=serve; s=$(date +%s.%N)
$PY -m routerdc serve --checkpoint "$W/router" --models-config "$W/models.json" --host 127.0.0.1 --port $PORT \
    --preload --log-level warning & SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
until curl -sf http://127.0.0.1:$PORT/health >/dev/null; do sleep 0.5; done
printf '[time] %-10s %6.1f s\n' serve "$(echo "$(date +%s.%N) - $s" | bc)" >&2
STEP=client; t $PY - $PORT <<'PY'
import sys
from openai import OpenAI
c = OpenAI(base_url=f"http://127.0.0.1:{sys.argv[1]}/v1", api_key="EMPTY")
r = c.chat.completions.create(model="routerdc", messages=[{"role": "user", "content": "Which colour is thing 2?"}])
print("answer:", repr(r.choices[0].message.content), "routing:", r.model_extra["routerdc"])
PY
