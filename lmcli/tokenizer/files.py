"""Tokenizer files in GPT-2's format, so lmcli, Hugging Face tokenizers and tiktoken share them.

GPT-2 stores byte-level tokens as printable strings: each of the 256 byte values maps to one
unicode character (printable Latin-1 bytes map to themselves, the rest to code points from 256
up, e.g. the space byte 0x20 becomes "Ġ"). ``vocab.json`` maps such strings to ids and
``merges.txt`` holds one merge per line, its two parts separated by a space, in creation order.
Special tokens are stored as their literal text.

A tokenizer directory also holds ``tokenizer-meta.json``: the special tokens it was trained
with and how, so later commands (encode, train, generate) can default to them.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import json
from pathlib import Path

from lmcli.atomic import atomic_open
from lmcli.errors import LmcliError

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
META_FILE = "tokenizer-meta.json"


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@functools.cache
def _byte_encoding_map():
    """A charmap codec table from GPT-2's 256 printable characters back to their bytes."""
    table = bytes_to_unicode()
    return codecs.charmap_build("".join(table[b] for b in range(256)))


def token_to_str(token: bytes) -> str:
    """A token's bytes in GPT-2's printable form."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def str_to_token(text: str) -> bytes:
    """Inverse of ``token_to_str``; strings outside the byte alphabet are literal (special) tokens."""
    try:
        return codecs.charmap_encode(text, "strict", _byte_encoding_map())[0]
    except UnicodeEncodeError:
        return text.encode("utf-8")


def save_tokenizer(
    out_dir: str | Path,
    vocab: dict[int, bytes],
    merges: list[tuple[bytes, bytes]],
    special_tokens: list[str],
    meta: dict | None = None,
) -> None:
    """Write vocab.json, merges.txt and tokenizer-meta.json atomically into ``out_dir``."""
    out_dir = Path(out_dir)
    special = {tok.encode("utf-8") for tok in special_tokens}
    vocab_json = {(t.decode("utf-8") if t in special else token_to_str(t)): i for i, t in sorted(vocab.items())}
    with atomic_open(out_dir / VOCAB_FILE, encoding="utf-8") as f:
        json.dump(vocab_json, f, ensure_ascii=False, indent=0)
    with atomic_open(out_dir / MERGES_FILE, encoding="utf-8") as f:
        f.writelines(f"{token_to_str(a)} {token_to_str(b)}\n" for a, b in merges)
    with atomic_open(out_dir / META_FILE, encoding="utf-8") as f:
        json.dump({"special_tokens": list(special_tokens), "vocab_size": len(vocab), **(meta or {})}, f, indent=2)


def load_vocab(vocab_path: str | Path) -> dict[int, bytes]:
    try:
        raw = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LmcliError(f"{vocab_path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict) or not all(isinstance(i, int) for i in raw.values()):
        raise LmcliError(f"{vocab_path} is not a GPT-2 vocab.json (a JSON object of token -> id)")
    return {i: str_to_token(s) for s, i in raw.items()}


def load_merges(merges_path: str | Path) -> list[tuple[bytes, bytes]]:
    lines = Path(merges_path).read_text(encoding="utf-8").split("\n")
    if lines[0].startswith("#version"):
        lines[0] = ""
    merges = []
    for lineno, line in enumerate(lines, 1):
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise LmcliError(f"{merges_path}:{lineno}: expected two tokens separated by a space, got {line!r}")
        merges.append((str_to_token(parts[0]), str_to_token(parts[1])))
    return merges


def load_tokenizer_files(vocab_path: str | Path, merges_path: str | Path) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Read a GPT-2-format vocab/merges pair and check they agree (every merge's parts and result exist)."""
    vocab = load_vocab(vocab_path)
    merges = load_merges(merges_path)
    known = set(vocab.values())
    lefts, rights = (list(parts) for parts in zip(*merges)) if merges else ([], [])
    if not known.issuperset(lefts) or not known.issuperset(rights) or not known.issuperset(map(bytes.__add__, lefts, rights)):
        n, a, b, part = next((n, a, b, part) for n, (a, b) in enumerate(merges, 1) for part in (a, b, a + b) if part not in known)
        raise LmcliError(
            f"{merges_path}: merge {n} ({token_to_str(a)} {token_to_str(b)}) uses "
            f"{token_to_str(part)!r}, which is not in {vocab_path}: the files do not belong together"
        )
    return vocab, merges


def read_meta(tokenizer_dir: str | Path) -> dict:
    """The tokenizer's metadata, or {} for a directory without one (e.g. GPT-2's own files)."""
    path = Path(tokenizer_dir) / META_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def tokenizer_paths(tokenizer_dir: str | Path) -> tuple[Path, Path]:
    """vocab.json and merges.txt of a tokenizer directory, with a clear error when they are missing."""
    tokenizer_dir = Path(tokenizer_dir)
    if not tokenizer_dir.is_dir():
        raise LmcliError(f"tokenizer directory {tokenizer_dir} does not exist (run `lmcli train-bpe` first)")
    paths = tokenizer_dir / VOCAB_FILE, tokenizer_dir / MERGES_FILE
    for p in paths:
        if not p.is_file():
            raise LmcliError(f"{tokenizer_dir} is not a tokenizer directory: {p.name} is missing")
    return paths


def tokenizer_fingerprint(tokenizer_dir: str | Path) -> str:
    """SHA-256 over vocab.json and merges.txt: identifies the exact tokenizer a model was trained with."""
    digest = hashlib.sha256()
    for p in tokenizer_paths(tokenizer_dir):
        digest.update(p.read_bytes())
    return digest.hexdigest()[:16]
