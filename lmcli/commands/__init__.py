"""The body of every ``lmcli`` subcommand, one module each, each with a ``run`` function.

``lmcli.cli`` parses the options and calls ``lmcli.commands.<name>.run``; a command fills in the
workspace's defaults, calls the library packages and shows the result (``lmcli.ui``), as a
table or, with ``--json``, one JSON object. Errors a user can fix are raised as ``LmcliError``
and printed by the CLI as one line.
"""
