"""Reading TOML config files: ``extends`` chains and ``--set section.key=value`` overrides.

Configs are TOML with one table per concern. Two conveniences, shared by ``lmcli train`` and
``lmcli accounting`` (which reads a config's ``[model]`` table without importing torch):

- ``extends = "tinystories.toml"`` at the top level reads that file first (relative to this
  one) and lays this file's tables over it, so an ablation config only states what differs;
- ``apply_override(raw, "section.key=value")`` sets one value after loading; the value is read
  as TOML (``3e-4``, ``true``, ``[0.9, 0.95]``), and a bare word is taken as a string.

Checking the values against a config's fields is ``lmcli.config_values``' job.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from lmcli.errors import LmcliError
from lmcli.readers import read_utf8


def read_toml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A TOML file as a dict, with the file named by its ``extends`` key merged underneath."""
    path = path.resolve()
    if path in seen:
        raise LmcliError(f"config {path} extends itself (through {' -> '.join(p.name for p in seen)})")
    text = read_utf8(path, "config")
    try:
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise LmcliError(f"config {path} is not valid TOML: {e}") from None
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise LmcliError(f"{path}: extends must be a file name, got {parent!r}")
    parent_path = path.parent / parent
    if not parent_path.is_file():
        raise LmcliError(f"{path}: extends {parent}, which does not exist beside it")
    return merge_tables(read_toml(parent_path, (*seen, path)), raw)


def merge_tables(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` laid over ``base``: tables merge key by key, other values replace."""
    merged = dict(base)
    for key, value in top.items():
        both_tables = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = merge_tables(base[key], value) if both_tables else value
    return merged


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``raw[section][key]`` from ``"section.key=value"`` (value parsed as TOML, else a string)."""
    name, sep, text = override.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not key:
        raise LmcliError(f"--set {override!r}: expected section.key=value, e.g. optimizer.lr=3e-4")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    table = raw.setdefault(section, {})
    if not isinstance(table, dict):
        raise LmcliError(f"--set {override!r}: {section} is not a table")
    table[key] = value
