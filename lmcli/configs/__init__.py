"""The bundled training configs, shipped inside the package (so a wheel install has them too).

``demo`` (the ``make demo`` model), ``tinystories`` (the CS336 base), ``tinystories-cpu``,
``owt`` (32k vocabulary), one file per CS336 ablation, which ``extends`` the base, and the
modern recipe that won in ``benchmarks/bench_recipe.py`` on each baseline: ``speedrun-demo``,
``tinystories-speedrun``, ``owt-speedrun``.
``lmcli train --config NAME`` finds them by name.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# A regular package installed as files (wheel or editable): its resources are real paths,
# which ``extends`` needs to find a config's parent beside it.
CONFIGS_DIR = Path(str(resources.files(__name__)))


def bundled_config(name: str) -> Path | None:
    """The bundled config called ``name`` (with or without ``.toml``), or None."""
    path = CONFIGS_DIR / (name if name.endswith(".toml") else f"{name}.toml")
    return path if path.is_file() else None


def bundled_names() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.toml"))
