#!/usr/bin/env bash
# Create the project venv and install the pinned dependency set (idempotent).
# torch is pinned in pyproject.toml and installed first, explicitly: an unpinned resolution
# would pull a multi-GB CUDA build from the registry.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: warning: apt-get not found; the built-in corpora (Debian packages) will not build" >&2
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
"$VENV/bin/python" -c "import torch, sentencepiece, sacrebleu; print('setup: torch', torch.__version__)"
