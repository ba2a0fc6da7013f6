#!/usr/bin/env bash
# Make .venv at the repo root: torch first (pinned: a CPU build lies on these machines'
# disk; on a GPU box the same pin brings the CUDA build), then the project in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[dev]'
# The dashboard's browser test drives Debian's chromium through Playwright (no browser download).
# Installed when missing and we may (root with apt-get; about 1.5 min); else that one test skips.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
      >/dev/null || echo "setup: could not install chromium; the browser test will skip"
  else
    echo "setup: chromium missing (needs root and apt-get to install); the browser test will skip"
  fi
fi
# The alert rules' unit tests (promtool) and the real-Prometheus test use Debian's prometheus package;
# installed when missing and we may (root with apt-get), else those tests skip with the reason.
if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; } \
      >/dev/null || echo "setup: could not install prometheus; the alert rule tests will skip"
  else
    echo "setup: promtool missing (needs root and apt-get to install); the alert rule tests will skip"
  fi
fi
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
