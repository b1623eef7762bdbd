#!/usr/bin/env bash
# GPU check: one table, <= 8 minutes on one GPU. See benchmarks/gpu_check.py.
#   bash benchmarks/gpu_check.sh [gpu_check.py options]   the check (table also in $OUT/gpu_check.md)
#   bash benchmarks/gpu_check.sh --dry-run                 toy sizes on CPU, no GPU needed
#   bash benchmarks/gpu_check.sh --fetch-wheels            on a machine with PyPI: wheels of what a
#                                                          GPU image without network lacks -> .whl/
# Without a GPU it says so and exits 0 before anything is installed. Else it uses the first
# Python whose torch sees CUDA: $HIERLAB_PYTHON, .venv/bin/python, python3. If there is none,
# it installs CUDA torch ($GPU_CHECK_TORCH, default torch==2.13.0: PyPI's Linux x86-64 wheel is
# the CUDA build) into .venv through ./install.sh, saying so. hierlab runs from src/; any of its
# requirements (plus accelerate, for HF Trainer) that Python lacks are installed into
# /tmp/gpu_check-site: from .whl/ when present (offline), else from the package index.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
say() { echo "gpu_check: $*"; }
EXTRA_REQS="accelerate>=1.0"

if [ "${1:-}" = "--fetch-wheels" ]; then
  # pydantic is what the GPU image (Python 3.12, torch and transformers preinstalled) lacks
  exec "${PYTHON:-python3}" -m pip download -q --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${@:2}" pydantic
fi

cuda_torch() {  # does this Python have a torch that sees a GPU?
  [ -n "$1" ] && command -v "$1" >/dev/null 2>&1 && "$1" -c \
    'import sys, torch; sys.exit(0 if torch.version.cuda and torch.cuda.is_available() else 1)' \
    >/dev/null 2>&1
}

PY=""
if [ "${1:-}" = "--dry-run" ]; then
  for cand in "${HIERLAB_PYTHON:-}" .venv/bin/python python3; do
    [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 && { PY=$cand; break; }
  done
else
  # 1. a GPU at all? Asked before any install step.
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    say "no CUDA device; nothing to measure"
    exit 0
  fi
  # 2. a Python with CUDA torch, or install one into .venv
  for cand in "${HIERLAB_PYTHON:-}" .venv/bin/python python3; do
    if cuda_torch "$cand"; then PY=$cand; break; fi
  done
  if [ -z "$PY" ]; then
    spec="${GPU_CHECK_TORCH:-torch==2.13.0}"
    say "no Python with CUDA torch here: installing $spec (CUDA build) into .venv via ./install.sh"
    if [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
      say "removing the CPU-only torch of .venv first"
      .venv/bin/python -m pip uninstall -q -y torch
    fi
    HIERLAB_TORCH="$spec" ./install.sh || { say "install failed"; exit 1; }
    cuda_torch .venv/bin/python || { say "the torch installed into .venv does not see the GPU"; exit 1; }
    PY=.venv/bin/python
  fi
fi
[ -n "$PY" ] || { say "no Python found"; exit 1; }

# 3. hierlab from this tree, and whatever of its requirements this Python lacks
SITE=/tmp/gpu_check-site
export PYTHONPATH="$ROOT/src:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
missing() {
  EXTRA_REQS="$EXTRA_REQS" "$PY" - <<'EOF'
import importlib.metadata as md, os, re, tomllib
try:
    from packaging.specifiers import SpecifierSet
except ImportError:  # then presence alone is checked
    SpecifierSet = None
reqs = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for r in reqs + os.environ["EXTRA_REQS"].split():
    name = re.match(r"[A-Za-z0-9_.-]+", r).group(0)
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        print(r)
        continue
    if SpecifierSet and not SpecifierSet(r[len(name):]).contains(have, prereleases=True):
        print(r)
EOF
}
need=$(missing | tr '\n' ' ')
if [ -n "${need// /}" ]; then
  if [ -d .whl ]; then
    say "installing the wheels in .whl/ into $SITE (offline) for: $need"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" --upgrade .whl/*.whl
  else
    say "installing into $SITE from the package index: $need"
    # shellcheck disable=SC2086
    "$PY" -m pip install -q --target "$SITE" --timeout 20 --retries 1 $need
  fi
  need=$(missing | tr '\n' ' ')
  if [ -n "${need// /}" ]; then
    say "still missing: $need(no network? run 'bash benchmarks/gpu_check.sh --fetch-wheels' where"
    say "PyPI is reachable and bring .whl/ along)"
    exit 1
  fi
fi
say "python $PY ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
exec "$PY" benchmarks/gpu_check.py "$@"
