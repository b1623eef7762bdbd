"""The one RNG home (corpus/rng.py): numpy and numba forms agree, the training window
order is bit-identical to before, and importing the corpus leaves the environment alone."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hierlab.corpus.rng import (
    GOLDEN,
    feistel_index,
    feistel_permute_array,
    mix64,
    mix64_array,
)
from hierlab.train.data import WindowOrder


def test_mix64_numpy_equals_numba() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2**64, size=2000, dtype=np.uint64)
    x[:4] = [0, 1, 2**63, 2**64 - 1]
    want = np.array([mix64(np.uint64(v)) for v in x], dtype=np.uint64)
    assert np.array_equal(mix64_array(x), want)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16, 17, 1000, 4097])
def test_feistel_array_equals_the_compiled_permutation(n: int) -> None:
    key = 0x1234_5678_9ABC_DEF1 * n % 2**64
    round_keys = np.array([key ^ (r * int(GOLDEN) % 2**64) for r in range(6)], dtype=np.uint64)
    got = feistel_permute_array(np.arange(n), n, round_keys)
    assert np.array_equal(got, [feistel_index(i, n, np.uint64(key)) for i in range(n)])
    assert np.array_equal(np.sort(got), np.arange(n))


# sha256[:16] of WindowOrder(n, seed)(arange(3n + 5)), taken before train/data.py used rng.py
_ORDER_GOLDEN = {
    (1, 0): "f5a5fd42d16a2030",
    (7, 1): "13cacc2208f07b51",
    (1000, 2): "f2184eb5ebe58f02",
    (12345, 99): "1eb3944e471b4012",
    (65537, 3): "6fdfcc8dc84c86b7",
}


@pytest.mark.parametrize(("n", "seed"), sorted(_ORDER_GOLDEN))
def test_window_order_bit_identical(n: int, seed: int) -> None:
    order = WindowOrder(n, seed)(np.arange(3 * n + 5))
    assert hashlib.sha256(order.tobytes()).hexdigest()[:16] == _ORDER_GOLDEN[(n, seed)]


def _python(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def test_import_leaves_numba_cache_dir_unset(tmp_path: Path) -> None:
    """The kernels still cache under a folder named by the corpus sources' hash, set on
    numba's config only, so no subprocess inherits it through the environment."""
    code = (
        "import os, numba, hierlab.corpus\n"
        "from hierlab.corpus import jit, rng\n"
        "rng.unit_seed(1, 2, 3, 0)\n"
        "print('NUMBA_CACHE_DIR' in os.environ, numba.config.CACHE_DIR == jit.CACHE_DIR,"
        " jit.CACHE_DIR)\n"
    )
    in_env, same, cache_dir = _python(code, XDG_CACHE_HOME=str(tmp_path)).split()
    assert in_env == "False" and same == "True"
    assert Path(cache_dir).parent == tmp_path / "hierlab" / "numba"
    assert any(Path(cache_dir).rglob("*.nbi"))  # the kernel's cache index landed there


def test_user_numba_cache_dir_is_kept(tmp_path: Path) -> None:
    code = "import numba, hierlab.corpus.rng\nprint(numba.config.CACHE_DIR)"
    assert _python(code, NUMBA_CACHE_DIR=str(tmp_path)) == str(tmp_path)
