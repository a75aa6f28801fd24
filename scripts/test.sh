#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ROUTERDC_DATA="${ROUTERDC_DATA:-$(cd .. && pwd)/shared/data}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
# The app's browser tests drive Debian's chromium (never a downloaded browser); CJK fonts make the
# Chinese examples legible in the screenshots. Installed once, quietly, when running as root.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[test] installing Debian chromium for the app's browser tests" >&2
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk; } >/dev/null 2>&1 \
    || echo "[test] could not install chromium; the browser tests will be skipped" >&2
fi
exec .venv/bin/python -m pytest "$@"
