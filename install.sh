#!/usr/bin/env bash
# Install hierlab into ./.venv (or $HIERLAB_VENV).
#   ./install.sh          the package
#   ./install.sh dev      the package plus test tools (pytest, ruff, dask)
#   ./install.sh scale    the package plus the multi-machine corpus engine (dask)
#   ./install.sh dev,interop  test tools plus TransformerLens, nnsight, datasets (the tests)
# torch: if the venv has no importable torch, torch==2.13.0 is installed first
# ($HIERLAB_TORCH overrides the spec; on this machine type that is the 190 MB CPU wheel),
# so the package's torch>=2.4 never pulls a multi-GB CUDA build onto a CPU machine.
# GPU users: install your own CUDA torch into the venv first; it is kept.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${HIERLAB_VENV:-.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip install -q "${HIERLAB_TORCH:-torch==2.13.0}"
fi
EXTRA="${1:-}"
if [ -n "$EXTRA" ]; then
  "$VENV/bin/python" -m pip install -q -e ".[$EXTRA]"
else
  "$VENV/bin/python" -m pip install -q -e .
fi
echo "hierlab installed in $VENV ($("$VENV/bin/python" -c 'import torch, hierlab; print("hierlab", hierlab.__version__, "torch", torch.__version__)'))"
