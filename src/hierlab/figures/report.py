"""``write_report``: one self-contained ``RUN/report.html`` (figures embedded as base64 PNG).

A report must survive being mailed or attached to an issue, so it references no file: the
figures, the claims (reference and standard side by side), the run's config, the software
versions and the stage timings are all inside the one HTML file.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import platform
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from hierlab.contracts import VARIANTS
from hierlab.errors import DataError
from hierlab.figures.claim_table import side_by_side
from hierlab.io import atomic_write_text

log = logging.getLogger(__name__)

FIGURE_ORDER = (
    "fig2_loss",
    "fig3_induction",
    "fig3_mechanism",
    "fig_in_context",
    "fig4_function_vectors",
    "fig5a_hydra",
    "fig_structure",
)
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.3em .5em;vertical-align:top;text-align:left}
th{background:#f4f4f4}.PASS{background:#e3f4dc;font-weight:600}
.FAIL{background:#fbe0dc;font-weight:600}.NA{background:#f0f0f0;color:#666}
td.detail{color:#555;font-size:.9em;max-width:22em}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}pre{background:#f7f7f7;padding:.8em;overflow:auto;
font-size:.8em}
"""


def versions() -> dict[str, str]:
    """Python and key package versions, so a report says what produced it.

    Returns:
        name -> version, read from package metadata (no heavy imports); ``not
        installed`` for a missing package.
    """
    out = {"python": f"{platform.python_version()} ({sys.executable})"}
    for pkg in ("hierlab", "torch", "transformers", "numpy", "pandas", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    if out["hierlab"] == "not installed":
        try:
            import hierlab

            out["hierlab"] = f"{hierlab.__version__} (source tree)"
        except ImportError:  # pragma: no cover
            pass
    return out


def _figure_sort_key(path: Path) -> tuple[int, str]:
    for i, prefix in enumerate(FIGURE_ORDER):
        if path.stem.startswith(prefix):
            return i, path.stem
    return len(FIGURE_ORDER), path.stem


def _img(path: Path) -> str:
    b64 = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(path.stem)
    return f'<img alt="{alt}" src="data:image/png;base64,{b64}">'


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "" if not np.isfinite(value) else f"{value:.4g}"
    return html.escape(str(value))


def claims_html(claims: pd.DataFrame) -> str:
    """The claims as an HTML table, reference and standard side by side.

    Args:
        claims: the claims table (:func:`~hierlab.figures.claims.evaluate_claims`).

    Returns:
        The ``<table>`` element, verdict cells coloured by verdict.
    """
    wide = side_by_side(claims)
    head = (
        "<tr><th rowspan=2>claim</th><th rowspan=2>statement</th>"
        + "".join(f"<th colspan=3>{v}</th>" for v in VARIANTS)
        + "</tr><tr>"
        + "<th>verdict</th><th>value</th><th>threshold / detail</th>" * len(VARIANTS)
        + "</tr>"
    )
    body = []
    for _, r in wide.iterrows():
        cells = [f"<td>{_fmt(r['claim'])}</td><td>{_fmt(r['statement'])}</td>"]
        for v in VARIANTS:
            verdict = str(r.get(f"{v} verdict", ""))
            css = "NA" if verdict == "N/A" else verdict
            cells.append(
                f'<td class="{css}">{_fmt(verdict)}</td><td>{_fmt(r.get(f"{v} value"))}</td>'
                f'<td class="detail">{_fmt(r.get(f"{v} threshold", ""))}<br>'
                f"{_fmt(r.get(f'{v} detail', ''))}</td>"
            )
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _kv_table(items: dict[str, object]) -> str:
    rows = "".join(f"<tr><th>{_fmt(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in items.items())
    return f"<table>{rows}</table>"


def _timings(run_dir: Path, extra: dict[str, float] | None) -> dict[str, object]:
    out: dict[str, object] = {}
    path = run_dir / "timings.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                out.update({str(k): _seconds(v) for k, v in data.items()})
        except json.JSONDecodeError:
            log.warning("%s: not valid JSON; timings omitted", path)
    for k, v in (extra or {}).items():
        out[k] = _seconds(v)
    return out


def _seconds(v: object) -> str:
    try:
        s = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(v)
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min ({s:.0f} s)"


def write_report(
    run_dir: Path | str,
    figures: Sequence[Path] | None = None,
    claims: pd.DataFrame | None = None,
    extra_runs: Iterable[Path | str] = (),
    timings: dict[str, float] | None = None,
    out: Path | None = None,
) -> Path:
    """Write ``RUN/report.html``, one self-contained file.

    Args:
        run_dir: the run directory.
        figures: PNG paths to embed (default: every PNG in ``RUN/figures``); other files
            are skipped.
        claims: a table from :func:`~hierlab.figures.claims.evaluate_claims` (default:
            evaluated now).
        extra_runs: other run directories, for claims evaluated now.
        timings: extra {stage: seconds} shown after those of ``RUN/timings.json``.
        out: where to write (default ``RUN/report.html``).

    Returns:
        The report's path; a missing run directory is a
        :class:`~hierlab.errors.DataError`.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such run directory")
    if claims is None:
        from hierlab.figures.claims import evaluate_claims

        claims = evaluate_claims(run_dir, extra_runs=extra_runs)
    pngs = (
        [Path(p) for p in figures if Path(p).suffix == ".png"]
        if figures is not None
        else (list((run_dir / "figures").glob("*.png")))
    )
    pngs = sorted((p for p in pngs if p.is_file()), key=_figure_sort_key)

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>hierlab report — {html.escape(run_dir.resolve().name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>hierlab report — {html.escape(run_dir.resolve().name)}</h1>",
        f"<p>run directory <code>{html.escape(str(run_dir.resolve()))}</code>; written "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}</p>",
        "<h2>Claims (the reference study's C1–C10)</h2>",
        "<p>Each claim is a hypothesis checked on the tables, for the reference variant "
        "(the reference code's definitions) and the standard variant (the literature's). "
        "FAIL is a result, not an error; N/A means the data it needs are missing. The exact "
        "checks are documented in <code>hierlab.figures.claims</code>.</p>",
        claims_html(claims),
        "<h2>Figures</h2>",
    ]
    if not pngs:
        parts.append("<p>No figures (run <code>hierlab figures RUN</code>).</p>")
    for p in pngs:
        csv = p.with_suffix(".csv")
        note = f" — data: <code>figures/{csv.name}</code>" if csv.is_file() else ""
        parts.append(
            f"<figure>{_img(p)}<figcaption>{html.escape(p.stem)}{note}</figcaption></figure>"
        )
    parts.append("<h2>Config</h2>")
    cfg = run_dir / "config.yml"
    parts.append(
        f"<pre>{html.escape(cfg.read_text())}</pre>"
        if cfg.is_file()
        else "<p>No <code>config.yml</code> in the run directory.</p>"
    )
    parts.append("<h2>Versions</h2>" + _kv_table(versions()))
    t = _timings(run_dir, timings)
    parts.append(
        "<h2>Timings</h2>"
        + (_kv_table(t) if t else "<p>No <code>timings.json</code> in the run directory.</p>")
    )
    parts.append("</body></html>")
    path = out or run_dir / "report.html"
    atomic_write_text(path, "\n".join(parts))
    log.info("report: %s", path)
    return path
