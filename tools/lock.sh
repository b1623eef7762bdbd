#!/usr/bin/env bash
# The lock: uv.lock (every dependency of every extra, resolved against PyPI) and
# constraints.txt (exported from it without torch and what only torch needs, since the torch
# build is chosen per machine) that install.sh and CI install from. Commit both.
#   tools/lock.sh            after editing pyproject.toml: resolve what changed, keep the rest
#   tools/lock.sh --upgrade  move every dependency to the newest version pyproject.toml allows
#   tools/lock.sh --check    offline: fail when uv.lock is stale against pyproject.toml or
#                            constraints.txt against uv.lock (CI runs this)
# uv comes with `./install.sh dev` (.venv/bin/uv); $UV names another.
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-${HIERLAB_VENV:-.venv}/bin/uv}"
if ! [ -x "$UV" ]; then
  UV="$(command -v uv || true)"
  [ -n "$UV" ] || { echo "tools/lock.sh: no uv: run ./install.sh dev (or pip install uv)" >&2; exit 2; }
fi

export_constraints() {
  echo "# Exact versions from uv.lock for pip -c (install.sh). Regenerate: tools/lock.sh"
  "$UV" export --frozen --quiet --no-header --no-hashes --all-extras --no-emit-project \
    --prune torch --format requirements.txt
}

case "${1:-}" in
  --check)
    if ! out="$("$UV" lock --check --offline 2>&1)"; then
      echo "uv.lock is stale against pyproject.toml: run tools/lock.sh and commit uv.lock and constraints.txt" >&2
      echo "$out" >&2
      exit 1
    fi
    if ! export_constraints | diff -u constraints.txt - >&2; then
      echo "constraints.txt differs from uv.lock: run tools/lock.sh and commit it" >&2
      exit 1
    fi
    echo "lock: uv.lock matches pyproject.toml and constraints.txt matches uv.lock"
    ;;
  "" | --upgrade)
    "$UV" lock ${1:+"$1"}
    export_constraints > constraints.txt
    echo "lock: wrote uv.lock and constraints.txt ($(grep -c '==' constraints.txt) pins)"
    ;;
  *)
    echo "usage: tools/lock.sh [--upgrade | --check]" >&2
    exit 2
    ;;
esac
