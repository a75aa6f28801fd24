#!/usr/bin/env bash
# Entry of the GPU Space (deploy/gpu-space/Dockerfile): start the vLLM servers of the models config,
# wait until every one is healthy (and, when their GPU shares do not fit, put to sleep: vLLM's sleep
# mode, see routerdc/serving/launcher.py), then serve the app with the router on CUDA and the
# routed OpenAI-compatible API at /v1. Stops the vLLM servers when the app exits.
#
# The same script runs on CPU (ROUTERDC_CPU=1): vLLM's CPU build, tiny models from a models config
# of your own, the router on the CPU. Settings (environment):
#   ROUTERDC_MODELS_CONFIG  models config (default: configs/paper_7llms.yaml)
#   ROUTERDC_CPU            1: vLLM on CPU (serve-llms --cpu, --enforce-eager), router on CPU
#   ROUTERDC_APP_PYTHON     Python of the app's venv   (default: /opt/venvs/app/bin/python, else python3)
#   ROUTERDC_VLLM_PYTHON    Python of vLLM's venv      (default: /opt/venvs/vllm/bin/python)
#   ROUTERDC_LOG_DIR        vLLM server logs, <port>.log (default: $HOME/logs)
#   ROUTERDC_HEALTH_TIMEOUT seconds to wait for each vLLM server (default: 1800: 7 models to download)
#   HF_TOKEN                Hugging Face token (a Space secret) for gated models such as Llama 3
#   PORT                    the app's port (default: 7860, the Space's app_port)
# Extra arguments are passed to app.py.
set -euo pipefail
cd "${ROUTERDC_APP_DIR:-$(dirname "$0")/../..}"

CONFIG="${ROUTERDC_MODELS_CONFIG:-configs/paper_7llms.yaml}"
CPU="${ROUTERDC_CPU:-0}"
APP_PY="${ROUTERDC_APP_PYTHON:-/opt/venvs/app/bin/python}"
[ -x "$APP_PY" ] || APP_PY="$(command -v python3)"
export ROUTERDC_VLLM_PYTHON="${ROUTERDC_VLLM_PYTHON:-/opt/venvs/vllm/bin/python}"
LOG_DIR="${ROUTERDC_LOG_DIR:-$HOME/logs}"
HEALTH_TIMEOUT="${ROUTERDC_HEALTH_TIMEOUT:-1800}"
PORT="${PORT:-7860}"
mkdir -p "$LOG_DIR"
if [ -n "${HF_TOKEN:-}" ]; then export HUGGING_FACE_HUB_TOKEN="$HF_TOKEN"; fi

serve_args=(--models-config "$CONFIG" --log-dir "$LOG_DIR" --health-timeout "$HEALTH_TIMEOUT")
if [ "$CPU" = "1" ]; then
  serve_args+=(--cpu --extra-arg=--enforce-eager)
  export ROUTERDC_DEVICE=cpu
else
  export ROUTERDC_DEVICE="${ROUTERDC_DEVICE:-cuda}"
  export ROUTERDC_ENGINE=torch  # the ONNX engine routes on the CPU; the router runs on CUDA with torch
fi

# The launcher (python -m routerdc serve-llms) prints "<name>: <url>/v1 (pid N)" for each server
# once all are healthy (and asleep, in sleep mode); it stops them all on SIGTERM.
ready="$LOG_DIR/serve-llms.out"
: > "$ready"
"$APP_PY" -m routerdc serve-llms "${serve_args[@]}" > "$ready" 2>&1 &
launcher=$!
app=""
stop() {
  if [ -n "$app" ]; then kill -TERM "$app" 2>/dev/null || true; wait "$app" 2>/dev/null || true; fi
  kill -TERM "$launcher" 2>/dev/null || true
  wait "$launcher" 2>/dev/null || true
}
trap stop EXIT
trap 'exit 143' TERM INT

n_llms="$("$APP_PY" -c 'import sys; from routerdc.serving.config import load_models_config
print(len(load_models_config(sys.argv[1]).vllm_models))' "$CONFIG")"
echo "[entrypoint] starting $n_llms vLLM server(s) of $CONFIG (cpu=$CPU); logs in $LOG_DIR" >&2
deadline=$((SECONDS + HEALTH_TIMEOUT * (n_llms > 0 ? n_llms : 1)))
until [ "$(grep -c '/v1 (pid ' "$ready" || true)" -ge "$n_llms" ]; do
  if ! kill -0 "$launcher" 2>/dev/null; then
    echo "[entrypoint] the vLLM launcher exited before its servers were up:" >&2
    tail -n 40 "$ready" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "[entrypoint] the vLLM servers were not healthy within the timeout" >&2
    exit 1
  fi
  sleep 2
done
cat "$ready" >&2
echo "[entrypoint] vLLM servers up; starting the app on port $PORT (router on $ROUTERDC_DEVICE)" >&2

# Not exec: the EXIT trap stops the vLLM servers when the app stops.
"$APP_PY" app.py --models-config "$CONFIG" --host 0.0.0.0 --port "$PORT" "$@" &
app=$!
wait "$app"
