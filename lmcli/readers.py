"""Reading the text and JSON files lmcli reads back, with one clear error for any damage.

Files that lmcli wrote itself can still be damaged: cut off by a ``kill -9``, overwritten by
another program, copied half-way. ``read_utf8`` and ``read_json`` turn every way such a file
can fail to read into an ``LmcliError`` that names the file and what is wrong; the readers of
each format (tokenizer files, configs, metrics) build on them and check the content.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmcli.errors import LmcliError


def read_utf8(path: Path, what: str = "file") -> str:
    """The text of ``path``, which must be valid UTF-8."""
    if path.is_dir():
        raise LmcliError(f"{what} {path} is a directory, not a file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LmcliError(f"{what} {path} is not UTF-8 text (byte offset {e.start}: {e.reason})") from None


def read_json(path: Path, what: str = "file") -> Any:
    """The JSON value in ``path``."""
    text = read_utf8(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LmcliError(f"{what} {path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # an integer of thousands of digits, nesting too deep
        raise LmcliError(f"{what} {path} is not usable JSON ({e})") from None
