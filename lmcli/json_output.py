"""JSON for ``--json`` outputs: JSON has no NaN or Infinity, so an unusable number becomes null."""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(value: float | None) -> float | None:
    """``value`` if it is a finite number, else None (a missing, NaN or infinite value)."""
    return value if value is not None and math.isfinite(value) else None


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float inside it (dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON text of ``value`` (non-finite numbers as null)."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)
