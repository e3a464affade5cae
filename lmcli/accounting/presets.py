"""The models ``lmcli accounting`` knows by name, and reading one from a CONFIG.toml instead.

GPT-2 sizes as CS336 states them: vocabulary 50,257, context 1,024, SwiGLU with d_ff = 4·d_model,
untied LM head. ``tinystories`` is the ``ModelConfig`` default (the CS336 TinyStories model).
"""

from __future__ import annotations

from pathlib import Path

from lmcli.errors import LmcliError
from lmcli.model.config import ModelConfig
from lmcli.toml_config import read_toml


def gpt2(num_layers: int, d_model: int, num_heads: int) -> ModelConfig:
    return ModelConfig(
        vocab_size=50_257, context_length=1_024, d_model=d_model, num_layers=num_layers, num_heads=num_heads,
        d_ff=4 * d_model,
    )


PRESETS = {
    "gpt2-small": gpt2(12, 768, 12),
    "gpt2-medium": gpt2(24, 1024, 16),
    "gpt2-large": gpt2(36, 1280, 20),
    "gpt2-xl": gpt2(48, 1600, 25),
    "tinystories": ModelConfig(),
}


def resolve_model(spec: str) -> ModelConfig:
    """A preset name or the path of a TOML file with a ``[model]`` table."""
    if spec.lower() in PRESETS:
        return PRESETS[spec.lower()]
    if spec.endswith(".toml") or Path(spec).exists():
        return read_model_table(Path(spec))
    raise LmcliError(f"unknown model {spec!r}: use one of {', '.join(PRESETS)} or the path of a CONFIG.toml")


def read_model_table(path: Path) -> ModelConfig:
    """The ``[model]`` table of a training config, its ``extends`` chain applied as training does."""
    if not path.is_file():
        raise LmcliError(f"config file not found: {path}")
    table = read_toml(path).get("model")
    if not isinstance(table, dict):
        raise LmcliError(f"{path}: no [model] table")
    try:
        return ModelConfig.from_dict(table)
    except LmcliError as e:
        raise LmcliError(f"{path}: {e}") from None
