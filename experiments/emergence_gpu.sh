#!/usr/bin/env bash
# The emergence searches on one GPU: see experiments/emergence_gpu.py.
#   bash experiments/emergence_gpu.sh [emergence_gpu.py options]
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
# EMERGENCE_CONFIG picks the sweep: the matched arms (default) or configs/emergence-gpu.yml
exec python3 experiments/emergence_gpu.py "${EMERGENCE_CONFIG:-configs/emergence-arms-gpu.yml}" \
  --results "${OUT:-/tmp/emergence}" "$@"
