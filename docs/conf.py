"""Sphinx configuration of the hierlab docs (MyST Markdown, notebooks run by myst-nb).

Build (warnings are errors; the tutorials under tutorials/ are executed):

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
SRC = DOCS.parent / "src"
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(DOCS / "_ext"))
# the notebook kernels import the same hierlab as autodoc: this checkout's, whatever the
# environment has installed
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))

import hierlab  # noqa: E402

project = "hierlab"
author = "hierlab contributors"
copyright = "2026, hierlab contributors"
release = version = hierlab.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "config_reference",
]

exclude_patterns = ["_build", "**/.ipynb_checkpoints", "emergence/cpu", "emergence/flat"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}

# MyST: $...$ maths, GitHub-style heading anchors (the same slugs GitHub renders, so
# "docs/probes.md#metrics-tables" works on GitHub and here)
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Notebooks (tutorials/*.md, MyST notebooks that jupytext also reads) run on every build,
# on tiny configs; an error in a cell fails the build.
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_timeout = 240
nb_execution_show_tb = True
nb_merge_streams = True
nb_output_stderr = "remove"  # progress bars and log lines; errors still fail the build

autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_mock_imports: list[str] = []
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"hierlab {release}"
