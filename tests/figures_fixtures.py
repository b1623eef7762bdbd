"""Synthetic run directories for the figures tests: plausible tables, no models.

``make_synthetic_run`` writes what the probes and training stages would (CONTRACTS.md):
``models/<c>/{loss.csv,eval.csv,run.json}`` and ``metrics/<probe>.parquet``, with curves
shaped like the reference study's (flat n-gram loss, slowly falling PCFG loss, an abrupt
PCFG induction rise, negative PCFG / positive n-gram Hydra drops). ``make_external_run``
writes an OLMo-like hub model's tables into a second run dir (for ``extra_runs``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

NGRAM_FLOORS = {"entropy_rate": 1.70}
PCFG_FLOORS = {"no_context": 4.87, "latent_known": 3.90}
OLMO = "allenai/OLMo-1B-hf"


def rows(
    model: str,
    probe: str,
    variant: str,
    metric: str,
    step: int,
    value: float,
    *,
    source: str = "run",
    layer: int | None = None,
    head: int | None = None,
    k: int | None = None,
) -> dict:
    """One tidy metrics row (CONTRACTS.md schema)."""
    return {
        "source": source,
        "model": model,
        "step": step,
        "tokens_seen": step * 1024,
        "probe": probe,
        "variant": variant,
        "metric": metric,
        "layer": layer,
        "head": head,
        "k": k,
        "value": float(value),
        "n_samples": 20,
        "seed": 0,
    }


def to_table(records: list[dict]) -> pd.DataFrame:
    """Rows -> a metrics table with the contract's dtypes."""
    df = pd.DataFrame.from_records(records)
    for col in ("tokens_seen", "layer", "head", "k", "n_samples", "seed"):
        df[col] = df[col].astype("Int64")
    df["step"] = df["step"].astype("int64")
    return df


def _sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-x))


def model_records(
    model: str,
    kind: str,
    steps: list[int],
    n_layers: int,
    n_heads: int,
    *,
    source: str = "run",
    probes: tuple[str, ...] = ("induction", "fv", "hydra", "structure"),
) -> dict[str, list[dict]]:
    """Metrics rows of one model, per probe, shaped like the reference's curves."""
    out: dict[str, list[dict]] = {p: [] for p in probes}
    final = steps[-1]
    kw = {"source": source}
    for step in steps:
        frac = step / final
        # induction: flat ~0.025 for n-gram; abrupt rise at 40% for PCFG; early for external
        if kind == "ngram":
            base = 0.025
        elif kind == "pcfg":
            base = 0.02 + 0.73 * _sigmoid((frac - 0.4) * 60)
        else:
            base = 0.03 + 0.85 * _sigmoid((frac - 0.03) * 150) - 0.05 * frac
        if "induction" in probes:
            rec = out["induction"]
            for k in range(1, 11):
                v = base - 0.001 * k
                rec.append(rows(model, "induction", "reference", "score", step, v, k=k, **kw))
                rec.append(
                    rows(
                        model,
                        "induction",
                        "reference",
                        "score_max_then_mean",
                        step,
                        v + 0.01,
                        k=k,
                        **kw,
                    )
                )
            pm_max = base * 0.8
            for layer in range(n_layers):
                for head in range(n_heads):
                    scale = 1.0 if (layer, head) == (1, 0) else 0.2
                    rec.append(
                        rows(
                            model,
                            "induction",
                            "standard",
                            "prefix_matching",
                            step,
                            pm_max * scale,
                            layer=layer,
                            head=head,
                            **kw,
                        )
                    )
                    rec.append(
                        rows(
                            model,
                            "induction",
                            "standard",
                            "duplicate_token",
                            step,
                            base * scale,
                            layer=layer,
                            head=head,
                            **kw,
                        )
                    )
            rec.append(
                rows(model, "induction", "standard", "prefix_matching_max", step, pm_max, **kw)
            )
        if "fv" in probes and kind == "pcfg":
            rec = out["fv"]
            for layer in range(n_layers):
                bump = np.exp(-((layer - n_layers / 2) ** 2) / 2.0)
                rec.append(
                    rows(
                        model,
                        "fv",
                        "reference",
                        "fv_improvement",
                        step,
                        -0.05 + 0.6 * frac * bump,
                        layer=layer,
                        **kw,
                    )
                )
                for task, gain in (("copy_object", 0.7), ("next_verb", 0.4)):
                    rec.append(
                        rows(
                            model,
                            "fv",
                            "standard",
                            f"fv_accuracy:{task}",
                            step,
                            0.1 + gain * frac * bump,
                            layer=layer,
                            **kw,
                        )
                    )
            for task in ("copy_object", "next_verb"):
                rec.append(
                    rows(model, "fv", "standard", f"zero_shot_accuracy:{task}", step, 0.1, **kw)
                )
                rec.append(
                    rows(
                        model,
                        "fv",
                        "standard",
                        f"icl_accuracy:{task}",
                        step,
                        0.2 + 0.7 * frac,
                        **kw,
                    )
                )
                rec.append(rows(model, "fv", "standard", f"chance:{task}", step, 1 / 300, **kw))
        if "hydra" in probes:
            rec = out["hydra"]
            for k in (1, 2):
                for layer in range(k, n_layers):
                    if kind == "ngram":
                        v = 0.3 + 1.5 * layer * (1 + frac)
                    elif kind == "pcfg":
                        v = -(0.2 + 0.5 * layer) * (1.2 - 0.5 * frac)
                    else:
                        v = -2.5 * frac if layer >= n_layers - 2 else 0.3 * (1 - frac)
                    rec.append(
                        rows(model, "hydra", "reference", "drop", step, v, layer=layer, k=k, **kw)
                    )
            for layer in range(n_layers):
                direct = 1.0 + 0.1 * layer
                comp = (0.2 + 0.1 * layer) if kind == "pcfg" else -0.1 - 0.05 * layer
                if kind == "external":
                    comp = 0.5 if layer >= n_layers - 2 else -0.05
                for metric, v in (
                    ("direct_effect", direct),
                    ("total_effect", direct - comp),
                    ("compensation", comp),
                    ("compensation_ratio", comp / direct),
                ):
                    rec.append(rows(model, "hydra", "standard", metric, step, v, layer=layer, **kw))
        if "structure" in probes and kind == "pcfg":
            rec = out["structure"]
            for variant in ("reference", "standard"):
                rec.append(
                    rows(
                        model,
                        "structure",
                        variant,
                        "subject_to_verb",
                        step,
                        0.8 + 0.04 * frac,
                        **kw,
                    )
                )
                rec.append(
                    rows(
                        model,
                        "structure",
                        variant,
                        "verb_to_object",
                        step,
                        1.0 - 0.2 * np.exp(-8 * frac),
                        **kw,
                    )
                )
                rec.append(
                    rows(
                        model,
                        "structure",
                        variant,
                        "connector_to_subject",
                        step,
                        1.0 - 0.15 * np.exp(-8 * frac),
                        **kw,
                    )
                )
    return out


def _write_model_dir(run: Path, name: str, kind: str, steps: list[int], n_layers: int) -> None:
    mdir = run / "models" / name
    mdir.mkdir(parents=True, exist_ok=True)
    final = steps[-1]
    log_steps = np.arange(10, final + 1, 10)
    frac = log_steps / final
    rng = np.random.default_rng(0)
    if kind == "ngram":
        loss = 1.764 + 0.315 * np.exp(-log_steps / 15.0) + rng.normal(0, 0.002, len(log_steps))
    else:
        loss = 4.60 + 0.8 * np.exp(-frac / 0.4) + rng.normal(0, 0.003, len(log_steps))
    pd.DataFrame(
        {
            "step": log_steps,
            "tokens_seen": log_steps * 1024,
            "train_loss": loss,
            "lr": 1e-3,
            "grad_norm": 1.0,
            "tokens_per_s": 30000.0,
        }
    ).to_csv(mdir / "loss.csv", index=False)
    s = np.array(steps)
    test = (1.77 if kind == "ngram" else 4.62 + 0.8 * np.exp(-(s / final) / 0.4)) + 0 * s
    pd.DataFrame({"step": s, "tokens_seen": s * 1024, "test_loss": test}).to_csv(
        mdir / "eval.csv", index=False
    )
    info = {
        "corpus": name,
        "kind": kind,
        "vocab_size": 1003,
        # bookkeeping keys beside the floors must not be drawn as floors (regression)
        "loss_floors": {**(NGRAM_FLOORS if kind == "ngram" else PCFG_FLOORS),
                        "mean_sentence_length": 6.0, "entropy_rate_samples": 2000.0},
        "num_layers": n_layers,
    }
    (mdir / "run.json").write_text(json.dumps(info))


def make_synthetic_run(
    root: Path,
    *,
    n_ckpt: int = 12,
    n_layers: int = 4,
    n_heads: int = 4,
    probes: tuple[str, ...] = ("induction", "fv", "hydra", "structure"),
    corpora: tuple[str, ...] = ("ngram", "pcfg"),
    config_yml: bool = True,
) -> Path:
    """Write a plausible run dir (two small models, four probe tables) and return it."""
    run = root / "run"
    steps = [int(100 * (i + 1)) for i in range(n_ckpt)]
    tables: dict[str, list[dict]] = {p: [] for p in probes}
    for name in corpora:
        _write_model_dir(run, name, name, steps, n_layers)
        for probe, recs in model_records(
            name, name, steps, n_layers, n_heads, probes=probes
        ).items():
            tables[probe] += recs
    (run / "metrics").mkdir(parents=True, exist_ok=True)
    for probe, recs in tables.items():
        if recs:
            to_table(recs).to_parquet(run / "metrics" / f"{probe}.parquet", index=False)
    if config_yml:
        (run / "config.yml").write_text("name: synthetic\nmodel:\n  num_layers: 4\n")
    (run / "timings.json").write_text(json.dumps({"corpus": 1.5, "train": 42.0, "probe": 7.25}))
    return run


def make_external_run(root: Path, *, n_ckpt: int = 15, n_layers: int = 16) -> Path:
    """A run dir holding only an OLMo-like hub model's metrics (for ``extra_runs``)."""
    run = root / "olmo_sweep"
    steps = [int(s) for s in np.linspace(1000, 738_000, n_ckpt).round(-3)]
    tables = model_records(
        OLMO, "external", steps, n_layers, 2, source=f"hub:{OLMO}", probes=("induction", "hydra")
    )
    (run / "metrics").mkdir(parents=True, exist_ok=True)
    for probe, recs in tables.items():
        to_table(recs).to_parquet(run / "metrics" / f"{probe}.parquet", index=False)
    return run


def make_olmo_loss_csv(root: Path) -> Path:
    """An OLMo-like W&B loss export (step, loss), with a duplicated step as in the reference."""
    steps = np.arange(0, 380_000, 500)
    loss = 2.4 + 8.0 * np.exp(-steps / 3000.0) + 0.3 * np.exp(-steps / 100_000.0)
    df = pd.DataFrame({"step": steps, "loss": loss})
    df = pd.concat([df, df.iloc[[10]]], ignore_index=True)
    path = root / "olmo_loss.csv"
    df.to_csv(path, index=False)
    return path
