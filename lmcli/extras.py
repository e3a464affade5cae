"""Optional dependencies: heavy or occasional libraries that only some inputs or commands need.

They are the package's extras (``pip install 'lmcli[data]'``); a command that needs a missing
one stops with a line naming the extra, not an ImportError traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from lmcli.errors import LmcliError


def optional_module(name: str, extra: str, purpose: str) -> ModuleType:
    """The module ``name``, or an LmcliError saying that ``purpose`` needs the extra ``extra``."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise LmcliError(f"{purpose} needs the {name.split('.')[0]} package: pip install 'lmcli[{extra}]'") from None
