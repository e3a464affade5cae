"""Encoding a corpus into token shards with a manifest, resumable after any interruption.

``lmcli encode INPUT... --out-dir DIR --shard-tokens N`` writes the ids of all its inputs, in
order, as ``DIR/shard-00000.npy``, ``shard-00001.npy``, ... of about N tokens each, and
``DIR/manifest.json``: the tokenizer's fingerprint, the dtype, every shard's file, token and
document counts, and the sources with their sizes and modification times. Concatenated, the
shards are the ids of one ``lmcli encode`` of everything.

A shard ends at the first chunk boundary after N tokens (chunks: ``encode_file.encoded_chunks``,
the same for the same input every time), and the manifest records, for every finished shard,
the input and chunk it ends at. Each shard is written atomically and the manifest rewritten
after it, so after Ctrl-C or kill -9, running the same command again keeps the finished shards
(checked against the manifest), skips the chunks they hold and goes on. A changed input (size or
modification time), tokenizer, dtype, shard size or text field is detected and refused unless
``--force``, which starts over.

Past one machine: ``--part i/n`` encodes every n-th input (the i-th, the i+n-th, ...) into
``DIR/part-I-of-N/`` with its own manifest; its shards never span two inputs, and
``dataset_shards`` puts the shards of all parts back in input order, so n machines (a SLURM array)
give the ids of one machine encoding everything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lmcli.atomic import atomic_open
from lmcli.errors import LmcliError
from lmcli.readers import read_json
from lmcli.tokenizer.encode_file import MANIFEST, IdsFile, choose_dtype, encoded_chunks
from lmcli.tokenizer.files import tokenizer_fingerprint
from lmcli.tokenizer.sources import END_OF_TEXT, TextSource
from lmcli.tokenizer.tokenizer import Tokenizer

FORMAT = "lmcli-token-shards/2"  # 2: JSON lines are chunked by their bytes (the chunks a resumed run skips)
DEFAULT_SHARD_TOKENS = 100_000_000
IDENTITY = ("format", "tokenizer_fingerprint", "dtype", "shard_tokens", "text_field", "part", "sources")


def parse_part(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` as (i, n) with 0 <= i < n; None for None."""
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise LmcliError(f"--part must look like i/n (this machine's part i of n, from 0), got {text!r}") from None
    if n < 1:
        raise LmcliError(f"--part {text}: n, the number of parts, must be at least 1")
    if not 0 <= i < n:
        raise LmcliError(f"--part {text}: i must be in 0..{n - 1} for n = {n}")
    return i, n


def shard_directory(out_dir: Path, part: tuple[int, int] | None) -> Path:
    return out_dir if part is None else out_dir / f"part-{part[0]:05d}-of-{part[1]:05d}"


def source_record(index: int, source: TextSource) -> dict[str, Any]:
    """What identifies an input: its place in the input list, name, size and modification time."""
    mtime = source.path.stat().st_mtime_ns if source.kind != "hub" else 0
    return {"index": index, "name": source.name, "size": source.size, "mtime_ns": mtime}


def encode_to_shards(
    tokenizer: Tokenizer, tokenizer_dir: Path, sources: list[TextSource], out_dir: Path, shard_tokens: int = DEFAULT_SHARD_TOKENS,
    workers: int = 1, dtype: str = "auto", errors: str = "strict", text_field: str = "text", split: str = "train",
    part: tuple[int, int] | None = None, force: bool = False, on_source: Callable[[TextSource], Callable[[int], None]] | None = None,
) -> dict[str, Any]:
    """Encode ``sources`` (this machine's ``part`` of them) into shards and a manifest; returns the manifest
    (``resumed_shards``: how many finished shards of an earlier run were kept)."""
    if shard_tokens < 1:
        raise LmcliError(f"--shard-tokens must be positive, got {shard_tokens}")
    np_dtype = choose_dtype(tokenizer, dtype)
    mine = [(i, s) for i, s in enumerate(sources) if part is None or i % part[1] == part[0]]
    directory = shard_directory(out_dir, part)
    identity = {
        "format": FORMAT, "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer_dir), "dtype": np_dtype.name,
        "shard_tokens": shard_tokens, "text_field": text_field, "part": list(part) if part else None,
        "sources": [source_record(i, s) for i, s in mine],
    }
    shards = finished_shards(directory, identity, force)
    manifest = {**identity, "tokenizer": str(Path(tokenizer_dir).resolve()), "shards": shards, "complete": False,
                "resumed_shards": len(shards)}
    directory.mkdir(parents=True, exist_ok=True)
    eot = tokenizer.special_ids.get(END_OF_TEXT)
    start_source, start_chunk = (shards[-1]["end_source"], shards[-1]["end_chunk"]) if shards else (0, 0)
    current: IdsFile | None = None
    documents = 0

    def finish_shard(end_source: int, end_chunk: int) -> None:
        nonlocal current, documents
        current.close()
        shards.append({"file": current.path.name, "tokens": current.tokens, "documents": documents,
                       "end_source": end_source, "end_chunk": end_chunk, "first_input": first_input})
        write_manifest(directory, manifest)
        current, documents = None, 0

    try:
        for position in range(start_source, len(mine)):
            index, source = mine[position]
            advance = on_source(source) if on_source else (lambda n: None)
            skip = start_chunk if position == start_source else 0
            chunk = skip
            for _, read, ids in encoded_chunks(tokenizer, source, np_dtype, workers, errors, text_field, split, skip):
                if current is None:
                    current, first_input = IdsFile(directory / f"shard-{len(shards):05d}.npy", np_dtype), index
                current.write(ids)
                documents += int(np.count_nonzero(ids == eot)) if eot is not None else 0
                chunk += 1
                advance(read)
                if current.tokens >= shard_tokens:
                    finish_shard(position, chunk)
            if current is not None and part is not None:  # a part's shards never span two inputs
                finish_shard(position + 1, 0)
        if current is not None:
            finish_shard(len(mine), 0)
    except BaseException:
        if current is not None:
            current.abort()
        raise
    manifest["complete"] = True
    write_manifest(directory, manifest)
    return manifest


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    with atomic_open(directory / MANIFEST, encoding="utf-8") as f:
        json.dump({k: v for k, v in manifest.items() if k != "resumed_shards"}, f, indent=1)
        f.write("\n")


def finished_shards(directory: Path, identity: dict[str, Any], force: bool) -> list[dict[str, Any]]:
    """The shards of an earlier run into ``directory`` that this one keeps: all those still whole, when
    it encoded the same inputs the same way; none after ``force`` (which removes them)."""
    path = directory / MANIFEST
    if not path.exists():
        if directory.is_dir() and any(directory.glob("shard-*.npy")):
            raise LmcliError(f"{directory} holds shards but no {MANIFEST}: not lmcli's to resume (remove them or choose another --out-dir)")
        return []
    manifest = read_json(path, "shard manifest")
    if force:
        for shard in manifest.get("shards", []):
            (directory / Path(shard["file"]).name).unlink(missing_ok=True)
        path.unlink()
        return []
    changed = [key for key in IDENTITY if manifest.get(key) != identity[key]]
    if changed:
        what = "the inputs (a name, size or modification time)" if changed == ["sources"] else ", ".join(changed)
        raise LmcliError(f"{directory} holds shards of another encoding (changed: {what}); "
                         "add --force to start over, or choose another --out-dir")
    kept = []
    for shard in manifest["shards"]:
        file = directory / shard["file"]
        try:
            whole = file.is_file() and len(np.load(file, mmap_mode="r")) == shard["tokens"]
        except (OSError, ValueError):
            whole = False
        if not whole:  # damaged or missing: encode it (and what follows) again
            break
        kept.append(shard)
    return kept


def dataset_shards(directory: Path) -> list[Path]:
    """The shard files of an encoded dataset directory, in input order: its own manifest's, or those of
    its ``part-*`` directories merged (a part's shards hold one input each); an incomplete one is an error."""
    if (directory / MANIFEST).is_file():
        manifests = [directory]
    else:
        manifests = sorted(d for d in directory.glob("part-*-of-*") if (d / MANIFEST).is_file())
    if not manifests:
        raise LmcliError(f"{directory} is not an encoded dataset: it has no {MANIFEST} (write one with "
                         "`lmcli encode INPUT... --out-dir DIR --shard-tokens N`)")
    ordered, parts = [], []
    for d in manifests:
        manifest = read_json(d / MANIFEST, "shard manifest")
        if not manifest.get("complete"):
            raise LmcliError(f"{d} is not complete: run its `lmcli encode` again to finish it")
        parts.append(tuple(manifest["part"]) if manifest.get("part") else None)
        ordered += [((shard["first_input"], n), d / shard["file"]) for n, shard in enumerate(manifest["shards"])]
    if parts != [None] and sorted(parts) != [(i, len(parts)) for i in range(len(parts))]:
        raise LmcliError(f"{directory} holds parts of different or incomplete splits ({len(parts)} found): "
                         "encode every --part i/n of one n")
    return [path for _, path in sorted(ordered, key=lambda item: item[0])]
