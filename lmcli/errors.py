"""Errors a user can fix. The CLI prints them as one line and exits non-zero, never a traceback."""


class LmcliError(Exception):
    """Bad input or a state the user can correct: the message says what and, where possible, how."""
