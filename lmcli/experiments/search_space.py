"""What a sweep searches over: the ``--set`` options of ``lmcli sweep`` as fixed overrides and axes.

Each ``--set section.key=TEXT`` is one of:

- a single value (``training.max_steps=200``): a fixed override every trial gets;
- a list, ``v1,v2,...`` or ``choice:v1,v2,...``: an axis of values, tried as written (a grid
  takes every combination; a random or TPE search picks among them);
- a range, for a random or TPE search: ``uniform:LO:HI``, ``loguniform:LO:HI`` (sampled on a log
  scale: learning rates, weight decay) or ``int:LO:HI`` (integers, both ends included).

Commas inside brackets or quotes do not split (``optimizer.betas=[0.9,0.95],[0.9,0.99]`` is two
values). Nothing here knows about Optuna: ``lmcli.experiments.study`` turns axes into its
distributions.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

from lmcli.errors import LmcliError

BRACKETS = {"[": "]", "{": "}"}
RANGE_KINDS = ("uniform", "loguniform", "int")


@dataclass(frozen=True)
class Axis:
    """One swept key: a list of values (``kind == "choice"``) or a range ``low..high``."""

    key: str
    kind: str  # "choice" | "uniform" | "loguniform" | "int"
    values: tuple[str, ...] = ()  # the choices, as written
    low: float = 0.0
    high: float = 0.0

    @property
    def is_range(self) -> bool:
        return self.kind != "choice"

    def describe(self) -> str:
        return ",".join(self.values) if not self.is_range else f"{self.kind}:{self.low:g}:{self.high:g}"


def split_values(text: str) -> list[str]:
    """Split a --set value on the commas that are not inside brackets, braces or quotes."""
    values, current, closers, quote = [], [], [], None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in BRACKETS:
            closers.append(BRACKETS[ch])
        elif closers and ch == closers[-1]:
            closers.pop()
        elif ch == "," and not closers:
            values.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    values.append("".join(current).strip())
    if any(v == "" for v in values):
        raise LmcliError(f"--set value {text!r} has an empty item (write a,b,c)")
    return values


def parse_range(key: str, kind: str, text: str) -> Axis:
    """``LO:HI`` of a ``uniform``/``loguniform``/``int`` axis, checked."""
    bounds = text.split(":")
    try:
        low, high = (int(b) if kind == "int" else float(b) for b in bounds) if len(bounds) == 2 else (None, None)
    except ValueError:
        low = high = None
    if low is None or not (math.isfinite(low) and math.isfinite(high)):
        raise LmcliError(f"--set {key}={kind}:{text}: expected {kind}:LOW:HIGH with {'integers' if kind == 'int' else 'numbers'}")
    if not low < high:
        raise LmcliError(f"--set {key}={kind}:{text}: LOW must be below HIGH")
    if kind == "loguniform" and low <= 0:
        raise LmcliError(f"--set {key}={kind}:{text}: a log scale needs LOW > 0")
    return Axis(key, kind, low=low, high=high)


def parse_setting(setting: str) -> tuple[str, str | Axis]:
    """One ``--set``: (key, fixed value) or (key, Axis)."""
    key, sep, text = setting.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        raise LmcliError(f"--set {setting!r}: expected section.key=value[,value...], e.g. optimizer.lr=1e-3,3e-3")
    kind, colon, rest = text.partition(":")
    if colon and kind in RANGE_KINDS:
        return key, parse_range(key, kind, rest)
    if colon and kind == "choice":
        return key, Axis(key, "choice", tuple(split_values(rest)))
    values = split_values(text)
    return key, values[0] if len(values) == 1 else Axis(key, "choice", tuple(values))


def parse_settings(settings: list[str]) -> tuple[list[str], dict[str, Axis]]:
    """The ``--set`` options as (fixed overrides ``key=value``, axes by key), in the order given."""
    fixed: list[str] = []
    axes: dict[str, Axis] = {}
    seen: set[str] = set()
    for setting in settings:
        key, parsed = parse_setting(setting)
        if key in seen:
            raise LmcliError(f"--set {key} is given twice (list all its values in one --set: {key}=a,b)")
        seen.add(key)
        if isinstance(parsed, Axis):
            axes[key] = parsed
        else:
            fixed.append(f"{key}={parsed}")
    return fixed, axes


def grid(axes: dict[str, Axis]) -> list[dict[str, str]]:
    """Every combination of list axes, in the order given (ranges have no grid)."""
    ranges = [a.key for a in axes.values() if a.is_range]
    if ranges:
        raise LmcliError(f"--search grid takes listed values; {ranges[0]} is a range: use --search random or tpe")
    return [dict(zip(axes, combo)) for combo in itertools.product(*(a.values for a in axes.values()))]


def safe_name(text: str) -> str:
    """A value as a file-name fragment: characters other than letters, digits and ``.+-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "_"


def format_value(value: object) -> str:
    """A sampled value as a config override (floats to 4 significant digits: a run's name stays short)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
