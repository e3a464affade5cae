"""``python -m lmcli``: the same as the ``lmcli`` command."""

from lmcli.cli import app

app(prog_name="lmcli")
