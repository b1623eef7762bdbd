#!/usr/bin/env bash
# Install hierlab into ./.venv (or $HIERLAB_VENV) at the versions the tests passed with.
#   ./install.sh              the package
#   ./install.sh dev          the package plus test tools (pytest, ruff, dask, uv)
#   ./install.sh dev,interop  test tools plus TransformerLens, nnsight, datasets (the tests)
#   other extras: scale (dask), tracking, bench, docs; comma-separated
# 1. torch, per machine (tools/torch_choice.py, docs/install.md). A torch already importable
#    in the venv is kept (GPU users: install your CUDA build into the venv first). Otherwise
#    Linux without an NVIDIA driver gets the CPU build from PyTorch's CPU index (falling back
#    to the default index, in one line, where that index does not answer within 5 s); Linux
#    with a driver and macOS get the default index's build.
#    $HIERLAB_TORCH overrides the spec (default torch==2.13.0), $HIERLAB_TORCH_INDEX the index
#    (a URL, or "default").
# 2. everything else at the exact versions of constraints.txt (exported from uv.lock).
#    HIERLAB_NEWEST=1 ignores the lock and takes the newest versions pyproject.toml allows.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${HIERLAB_VENV:-.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip
if "$VPY" -c "import torch" >/dev/null 2>&1; then
  echo "torch: keeping the torch in $VENV ($("$VPY" -c 'import torch; print(torch.__version__)'))"
else
  CHOICE="$("$VPY" tools/torch_choice.py)"  # pip arguments, one a line; its reason on stderr
  TORCH_ARGS=()
  while IFS= read -r arg; do TORCH_ARGS+=("$arg"); done <<< "$CHOICE"
  "$VPY" -m pip install -q "${TORCH_ARGS[@]}"
fi
TARGET="."
[ -z "${1:-}" ] || TARGET=".[$1]"
if [ "${HIERLAB_NEWEST:-0}" = 1 ]; then
  # newest within pyproject.toml's bounds; the torch chosen above stays
  PIN="$(mktemp)"
  trap 'rm -f "$PIN"' EXIT
  "$VPY" -c 'import torch; print("torch==" + torch.__version__)' > "$PIN"
  echo "dependencies: the newest that pyproject.toml allows (HIERLAB_NEWEST=1), not the lock"
  "$VPY" -m pip install -q --upgrade --upgrade-strategy eager -c "$PIN" -e "$TARGET"
else
  "$VPY" -m pip install -q -c constraints.txt -e "$TARGET"
fi
echo "hierlab installed in $VENV ($("$VPY" -c 'import torch, hierlab; print("hierlab", hierlab.__version__, "torch", torch.__version__)'))"
