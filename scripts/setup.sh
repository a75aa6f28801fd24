#!/usr/bin/env bash
# Create .venv and install routerdc with its dependencies, CPU-only. Idempotent: it reinstalls
# only when requirements*.txt or pyproject.toml changed. torch is installed first, pinned, so
# that pip takes the CPU wheel instead of pulling several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${ROUTERDC_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.routerdc-setup"
want="$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing into $VENV (CPU torch first)" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  # requirements.txt carries the Space's CPU-index line and torch pin: drop them here.
  reqs="$(mktemp)"
  grep -vE '^(--extra-index-url|torch==)' requirements.txt > "$reqs"
  grep -vE '^-r ' requirements-dev.txt >> "$reqs"
  "$VENV/bin/python" -m pip install -q -r "$reqs"
  rm -f "$reqs"
  log="$(mktemp)"  # the editable build is chatty; show its output only when it fails
  "$VENV/bin/python" -m pip install -q --no-deps -e . >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
  rm -f "$log"
  echo "$want" > "$stamp"
fi
