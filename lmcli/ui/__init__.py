"""What the commands show in the terminal: consoles, progress bars, the training panel, braille plots.

Only ``lmcli.commands`` uses this package; the library packages report through callbacks,
``lmcli.progress`` and training observers instead of printing.
"""
