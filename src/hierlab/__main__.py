"""``python -m hierlab``: the ``hierlab`` command line."""

from hierlab.cli import app

app(prog_name="hierlab")
