"""Re-derive the mechanism labels of finished runs from their stored per-head scores.

    python experiments/relabel_check.py runs/emergence-cpu/runs/*

After a change of the labelling rules (not of the scores), this says which checkpoints'
``label_model`` the current rules would give differently, without rerunning any model:
the labels are a pure function of the per-head ``successor_attention``,
``content_share``, ``causal_share``, ``fixed_offset_attention``,
``previous_token_attention`` and ``positional_flag`` rows of ``metrics/mechanism.parquet``
the per-layer ``causal_share_content_heads`` and the smallest ``prefix_matching_random``
over the tested lengths (the random-repeat test) (with the run's ``probes.mechanism``
thresholds; runs probed before that score existed read as having none).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from hierlab.config import load_config
from hierlab.contracts import MECHANISM_LABELS
from hierlab.probes.mechanism import HeadScores, layer_labels, model_label

FIELDS = {"successor": "successor_attention", "content_share": "content_share",
          "causal_share": "causal_share", "fixed_offset": "fixed_offset_attention",
          "previous_token": "previous_token_attention", "positional": "positional_flag"}


def relabel(run: Path) -> list[tuple[str, int, str, str]]:
    """``(model, step, stored, current)`` for every checkpoint whose label would change."""
    cfg = load_config(run / "config.yml").probes.mechanism
    d = pd.read_parquet(run / "metrics" / "mechanism.parquet")
    out = []
    for (model, step), g in d.groupby(["model", "step"]):
        n_l, n_h = int(g["layer"].max()) + 1, int(g["head"].max()) + 1
        arrays = {}
        for key, metric in FIELDS.items():
            a = np.full((n_l, n_h), np.nan)
            for r in g[g["metric"] == metric].itertuples():
                a[int(r.layer), int(r.head)] = r.value
            arrays[key] = a.astype(bool) if key == "positional" else a
        group = np.full(n_l, np.nan)  # the content heads' joint share, where measured
        for r in g[g["metric"] == "causal_share_content_heads"].itertuples():
            group[int(r.layer)] = r.value
        rnd = g[g["metric"] == "prefix_matching_random"]  # min over the tested lengths
        rmin = np.full((n_l, n_h), np.nan)
        for (layer, head), v in rnd.groupby(["layer", "head"])["value"].min().items():
            rmin[int(layer), int(head)] = v
        scores = HeadScores(**arrays, group_causal=group,
                            random_min=None if rnd.empty else rmin)
        now = model_label(layer_labels(scores, cfg))[0]
        stored = MECHANISM_LABELS[int(g.loc[g["metric"] == "label_model", "value"].iloc[0])]
        if now != stored:
            out.append((model, int(step), stored, now))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path, help="run folders (those without "
                    "metrics/mechanism.parquet are skipped)")
    for run in ap.parse_args().runs:
        if not (run / "metrics" / "mechanism.parquet").is_file():
            continue
        changed = relabel(run)
        print(f"{run.name}: {len(changed)} checkpoint(s) relabelled"
              + "".join(f"\n  {m} step {s}: {a} -> {b}" for m, s, a, b in changed))


if __name__ == "__main__":
    main()
