#!/usr/bin/env bash
# Set up (if needed) and launch the Gradio demo on http://127.0.0.1:7860 (HOST/PORT: ROUTERDC_HOST,
# ROUTERDC_PORT; every option of app.py has an environment variable, see app/settings.py).
# Uses the shipped router; when none is shipped yet, trains a small frozen-encoder router first.
# The router's embedding map ships with it (maps/); for other routers it is computed once and cached first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ROUTERDC_DATA="${ROUTERDC_DATA:-$(cd .. && pwd)/shared/data}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
CKPT="${ROUTERDC_CHECKPOINT:-checkpoints/routerdc-minilm}"
if [ ! -f "$CKPT/config.json" ]; then
  CKPT=runs/demo-frozen
  if [ ! -f "$CKPT/config.json" ]; then
    echo "[demo] no shipped router yet: training a frozen-encoder router into $CKPT (a few minutes on CPU)" >&2
    "$PY" -m routerdc train --freeze-encoder --projection --steps 300 --eval-every 100 --eval-max-per-task 200 \
          --output-dir "$CKPT" --test-files routerdc/split2_model7/mmlu_test.json
  fi
fi
export ROUTERDC_CHECKPOINT="$CKPT"
# A router that ships its map (checkpoints/*/maps/) starts with it; the app builds its ONNX form in the
# background while routing on torch. Any other router gets its map fitted before launch (then cached).
if ! compgen -G "$CKPT/maps/map-*.npz" >/dev/null; then
  echo "[demo] preparing the embedding map of $CKPT (cached after the first run)" >&2
  "$PY" app.py --prepare || echo "[demo] map not prepared; the app computes it in the background" >&2
fi
exec "$PY" app.py "$@"
