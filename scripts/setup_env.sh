#!/usr/bin/env bash
# Create .venv and install the project with its pinned dependencies.
# torch is installed first and pinned: a resolver that sees no torch picks the newest build,
# which on Linux drags in several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0"
# uv resolves and installs the rest in seconds; pip is the fallback.
if "$VENV/bin/python" -m pip install -q --disable-pip-version-check uv 2>/dev/null; then
  "$VENV/bin/python" -m uv pip install -q --python "$VENV/bin/python" -e ".[dev]"
else
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[dev]"
fi
# Byte-compile the environment once. pip skips it when PYTHONDONTWRITEBYTECODE is set and uv never does it
# by default; without .pyc files every process (each DVC stage, each test subprocess) compiles the sources of
# torch, transformers and scipy again: ~5 s per process here, a stage's whole runtime on small data.
# (A few vendored files are not valid Python 3 and fail to compile; they are never imported.)
"$VENV/bin/python" -m compileall -q -j 0 "$VENV/lib" >/dev/null 2>&1 || true
"$VENV/bin/python" -c "import torch, transformers, dvc, prefect, great_expectations, optuna, onnxruntime; print('environment ready: torch', torch.__version__, '| transformers', transformers.__version__)"
