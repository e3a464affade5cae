"""Checking the values of a TOML table against the types of a config's fields.

TOML has integers, floats, strings, booleans and arrays; a config field says which it wants.
An integer is accepted where a float is wanted (``lr = 1`` means 1.0) and an array where a
tuple is, but a boolean is never a number (Python's ``True == 1`` must not let
``d_model = true`` through). Numbers must be usable: floats finite (TOML has ``nan`` and
``inf``), integers within 64 bits (tensors and seeds hold no more). Errors name the key as the
user wrote it (``model.d_model``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

from lmcli.errors import LmcliError

INT64 = 2**63 - 1


def dataclass_from_table(cls: type, table: str, values: dict[str, Any]) -> Any:
    """An instance of the dataclass ``cls`` from the TOML table ``[table]``: unknown keys and wrong
    types are errors, missing keys take the defaults."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    checked = {}
    for key, value in values.items():
        if key not in known:
            raise LmcliError(f"unknown key {table}.{key} (known: {', '.join(sorted(known))})")
        checked[key] = checked_value(f"{table}.{key}", value, hints[key])
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing := [name for name in required if name not in checked]:
        raise LmcliError(f"{table} needs {', '.join(missing)}")
    return cls(**checked)


def checked_value(key: str, value: Any, kind: Any) -> Any:
    """``value`` converted to type ``kind`` (ints widen to floats, lists to tuples), or an error naming ``key``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):  # the first alternative that takes the value
        for alternative in args:
            try:
                return checked_value(key, value, alternative)
            except LmcliError:
                continue
        raise LmcliError(f"{key} must be {' or '.join(map(_type_name, args))}, got {shown(value)}")
    if dataclasses.is_dataclass(kind):  # a table of its own, e.g. one source of a data mixture
        if not isinstance(value, dict):
            raise LmcliError(f"{key} must be {_type_name(kind)}, got {shown(value)}")
        return dataclass_from_table(kind, key, value)
    if origin is Literal:
        if value not in args:
            raise LmcliError(f"{key} must be one of {', '.join(map(repr, args))}; got {shown(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or (args[-1] is not Ellipsis and len(value) != len(args)):
            size = "a list" if args[-1] is Ellipsis else f"a list of {len(args)}"
            raise LmcliError(f"{key} must be {size}, got {shown(value)}")
        item_types = [args[0]] * len(value) if args[-1] is Ellipsis else args
        return tuple(checked_value(key, v, t) for v, t in zip(value, item_types))
    is_integer = isinstance(value, int) and not isinstance(value, bool)
    if is_integer and kind in (int, float) and not -INT64 - 1 <= value <= INT64:
        raise LmcliError(f"{key} must fit in 64 bits (at most {INT64:,}), got {shown(value)}")
    if kind is float and is_integer:
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise LmcliError(f"{key} must be {_type_name(kind)}, got {type(value).__name__} {shown(value)}")
    if kind is float and not math.isfinite(value):
        raise LmcliError(f"{key} must be a finite number, got {value}")
    return value


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + f"… ({len(text):,} characters)"


def _type_name(kind: Any) -> str:
    if dataclasses.is_dataclass(kind):
        return "a table {" + ", ".join(f.name for f in dataclasses.fields(kind)) + "}"
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        if dataclasses.is_dataclass(item):
            return "a list of tables {" + ", ".join(f.name for f in dataclasses.fields(item)) + "}"
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}.get(item, str(item))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(kind, str(kind))
