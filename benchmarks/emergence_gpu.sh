#!/usr/bin/env bash
# The content-induction search on one GPU: see benchmarks/emergence_gpu.py.
#   bash benchmarks/emergence_gpu.sh [emergence_gpu.py options]
# On a GPU image without network, run `bash benchmarks/gpu_check.sh --fetch-wheels` on a
# machine with PyPI first and carry .whl/ (pydantic is what such an image lacks).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ] && ! python3 -c 'import pydantic' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-/tmp/cache}" HF_HUB_OFFLINE=1
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
exec python3 benchmarks/emergence_gpu.py configs/emergence-gpu.yml --results "${OUT:-/tmp/emergence}" "$@"
