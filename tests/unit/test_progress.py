"""Progress bars draw on a terminal only: one helper decides, every long loop asks it, and a
command whose output is captured (a CI log) carries no bar."""

from __future__ import annotations

import ast
import io
from pathlib import Path

from typer.testing import CliRunner

from hierlab.cli import app
from hierlab.progress import bars_enabled, progress_bar
from tiny import write_tiny_config

SRC = Path(__file__).resolve().parents[2] / "src" / "hierlab"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_draws_on_a_terminal_only() -> None:
    tty, log = _Terminal(), io.StringIO()
    assert bars_enabled(tty) and not bars_enabled(log)
    for stream in (tty, log):
        for _ in progress_bar(range(3), desc="steps", file=stream, mininterval=0):
            pass
    assert "\r" in tty.getvalue() and "steps" in tty.getvalue()
    assert log.getvalue() == ""
    forced = _Terminal()
    progress_bar(range(3), file=forced, enabled=False).close()
    assert forced.getvalue() == ""


def test_every_bar_goes_through_the_helper() -> None:
    """No module but hierlab.progress makes a tqdm bar itself."""
    direct = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "progress.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            direct += [f"{path.relative_to(SRC)}: {n}" for n in names
                       if n.split(".")[0] in ("tqdm", "rich") and "progress" not in n
                       and n != "rich.console"]
            if isinstance(node, ast.ImportFrom) and node.module == "rich.progress":
                direct.append(f"{path.relative_to(SRC)}: rich.progress")
    assert not direct, direct


def test_a_captured_command_prints_no_bar(tmp_path: Path) -> None:
    """Regression: the corpus and training bars printed into CI logs (captured output)."""
    cfg = write_tiny_config(tmp_path / "c.yml", training={"max_tokens": 2048})
    out = tmp_path / "run"
    for cmd in (["corpus", str(cfg), "--only", "ngram"], ["train", str(cfg), "--corpus", "ngram"]):
        res = CliRunner().invoke(app, [*cmd, "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert "\r" not in res.output and "%|" not in res.output and "█" not in res.output, \
            res.output
    assert (out / "models" / "ngram" / "loss.csv").exists()
