"""Synthetic corpora: the hierarchical PCFG and the n-gram baseline, as Arrow shards.

The samplers are numba-compiled with an on-disk cache keyed by a hash of this package's
sources (:mod:`hierlab.corpus.jit`); importing this package sets nothing process-wide.
"""
