"""Weights as safetensors files: one ``model.safetensors``, or shards listed by an index.

safetensors stores named tensors as raw bytes after a JSON header: no pickle, so loading
never runs code from the file. Hugging Face writes large models as several shards and
``model.safetensors.index.json`` (``weight_map``: tensor name -> shard file). Reading checks
what can go wrong: no weights at all, an index naming a missing shard, a cut-off or foreign file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmcli.atomic import current_umask
from lmcli.errors import LmcliError
from lmcli.readers import read_json

WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def write_weights(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})
    os.chmod(path, 0o666 & ~current_umask())  # safetensors creates its files 0600, unlike any other writer


def read_weights(model_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Path]]:
    """Every tensor of ``model_dir``'s ``model.safetensors`` or of the shards its index names, and the file
    each came from (for messages)."""
    single, index = model_dir / WEIGHTS_FILE, model_dir / INDEX_FILE
    if single.is_file():
        tensors = read_file(single)
        return tensors, dict.fromkeys(tensors, single)
    if not index.is_file():
        raise LmcliError(f"{model_dir} has no weights: neither {WEIGHTS_FILE} nor {INDEX_FILE} (only safetensors are read, never pickles)")
    content = read_json(index, "safetensors index")
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise LmcliError(f"{index} has no weight_map of tensor names to files")
    tensors: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {}
    for shard in sorted(set(weight_map.values())):
        path = model_dir / shard
        if not path.is_file() or Path(shard).name != shard:
            raise LmcliError(f"{index} names the shard {shard}, which is not a file in {model_dir}")
        found = read_file(path)
        tensors.update(found)
        origin.update(dict.fromkeys(found, path))
    return tensors, origin


def check_weights(tensors: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], origin: dict[str, Path]) -> None:
    """Each tensor of ``shapes`` that is present a floating-point array of the shape its config implies,
    all of it finite: else one LmcliError naming the file and the tensor. Reading trusts nothing: a cut
    or retyped tensor would otherwise fail deep inside the model, or be cast silently."""
    for name, expected in shapes.items():
        if name not in tensors:  # missing tensors are reported with the others a format lacks
            continue
        tensor, where = tensors[name], f"{origin[name]}: tensor {name}"
        if not tensor.is_floating_point():
            raise LmcliError(f"{where} holds {str(tensor.dtype).removeprefix('torch.')} values; weights are floating point")
        if tuple(tensor.shape) != expected:
            shown = "a scalar" if tensor.dim() == 0 else f"shape {tuple(tensor.shape)}"
            raise LmcliError(f"{where} is {shown}; config.json implies shape {expected}")
        if not bool(torch.isfinite(tensor).all()):
            raise LmcliError(f"{where} holds NaN or infinite values")


def read_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, json.JSONDecodeError, ValueError) as e:
        raise LmcliError(f"{path} is not a complete safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
