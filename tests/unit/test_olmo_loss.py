"""``hierlab olmo-loss``: the OLMo-1B W&B loss export, offline with a stubbed API."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hierlab.cli import app
from hierlab.errors import DataError
from hierlab.figures import olmo_loss as ol
from hierlab.figures.data import read_olmo_loss


@dataclass
class StubRun:
    name: str
    created_at: str
    rows: list[dict]
    asked: list = field(default_factory=list)

    def scan_history(self, keys: list[str], page_size: int = 1000) -> list[dict]:
        self.asked.append(list(keys))
        return [{k: r.get(k) for k in keys} for r in self.rows]


class StubApi:
    def __init__(self, runs: list[StubRun]) -> None:
        self._runs = runs
        self.projects: list[str] = []

    def runs(self, project: str) -> list[StubRun]:
        self.projects.append(project)
        return self._runs


def _rows(*pairs: tuple[int, float | None]) -> list[dict]:
    return [{"_step": s, "train/CrossEntropyLoss": v, "other": 1} for s, v in pairs]


def stub() -> StubApi:
    # API order is not creation order: the restart (newer) is listed first
    newer = StubRun("OLMo-1B-run-2", "2024-02-02T00:00:00", _rows((20, 2.0), (30, 1.9)))
    older = StubRun("OLMo-1B-run-1", "2024-01-01T00:00:00",
                    _rows((10, 3.0), (20, 2.5), (25, None), (21, 2.4), (21, 2.3)))
    other = StubRun("mitchish-eval", "2024-03-01T00:00:00", _rows((5, 9.0)))
    return StubApi([newer, other, older])


def test_fetch_concatenates_sorts_and_the_latest_run_wins() -> None:
    api = stub()
    df = ol.fetch_olmo_loss(api)
    assert api.projects == ["ai2-llm/OLMo-1B"]
    assert api._runs[0].asked == [["_step", "train/CrossEntropyLoss"]]
    assert api._runs[1].asked == []  # not an "OLMo" run: never read
    assert df["step"].tolist() == [10, 20, 21, 30]  # step 25 had no loss
    got = dict(zip(df["step"], df["loss"], strict=True))
    assert got[20] == 2.0 and dict(zip(df["step"], df["run"], strict=True))[20] == "OLMo-1B-run-2"
    assert got[21] == 2.3  # within a run, its last row for the step
    assert df["step"].dtype == "int64"


def test_cli_writes_the_csv_fig2_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ol, "_api", stub)
    out = tmp_path / "o" / "olmo.csv"
    res = CliRunner().invoke(app, ["olmo-loss", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert list(pd.read_csv(out).columns) == ["step", "loss", "run"]
    back = read_olmo_loss(out)
    assert back["step"].tolist() == [10, 20, 21, 30] and back["loss"].tolist()[1] == 2.0
    assert "olmo-loss" in CliRunner().invoke(app, ["--help"]).output
    helptext = CliRunner().invoke(app, ["olmo-loss", "--help"]).output
    assert "--out" in helptext and "latest run wins" in helptext


def test_no_matching_runs_is_a_data_error() -> None:
    with pytest.raises(DataError, match="no runs"):
        ol.fetch_olmo_loss(StubApi([StubRun("other", "", [])]))
