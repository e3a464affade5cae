"""Tokenizer files in GPT-2's format, so lmcli, Hugging Face tokenizers and tiktoken share them.

GPT-2 stores byte-level tokens as printable strings: each of the 256 byte values maps to one
unicode character (printable Latin-1 bytes map to themselves, the rest to code points from 256
up, e.g. the space byte 0x20 becomes "Ġ"). ``vocab.json`` maps such strings to ids and
``merges.txt`` holds one merge per line, its two parts separated by a space, in creation order.
Special tokens are stored as their literal text.

A tokenizer directory also holds ``tokenizer-meta.json``: the special tokens it was trained
with and how, so later commands (encode, train, generate) can default to them, and the SHA-256
of the other two files. It is written first and the two files after it, each atomically, so a
crash part-way leaves files that do not match their recorded digests, and loading says so
instead of using a mixed tokenizer. Every reader here checks what it reads and names the file
in its error.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from lmcli.atomic import atomic_open
from lmcli.config_values import shown
from lmcli.errors import LmcliError
from lmcli.readers import read_json, read_utf8

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


def token_text(token: bytes, limit: int = 40) -> str:
    """A token as text for a summary (invalid UTF-8 as U+FFFD), cut after ``limit`` characters."""
    text = token.decode("utf-8", errors="replace")
    return text if len(text) <= limit else f"{text[:limit]}… ({len(token):,} bytes)"


def save_tokenizer(
    out_dir: str | Path,
    vocab: dict[int, bytes],
    merges: list[tuple[bytes, bytes]],
    special_tokens: list[str],
    meta: dict | None = None,
) -> None:
    """Write tokenizer-meta.json (with the digests of the other two), vocab.json and merges.txt into ``out_dir``."""
    out_dir = Path(out_dir)
    special = {tok.encode("utf-8") for tok in special_tokens}
    vocab_json = {(t.decode("utf-8") if t in special else token_to_str(t)): i for i, t in sorted(vocab.items())}
    contents = {
        VOCAB_FILE: json.dumps(vocab_json, ensure_ascii=False, indent=0).encode("utf-8"),
        MERGES_FILE: "".join(f"{token_to_str(a)} {token_to_str(b)}\n" for a, b in merges).encode("utf-8"),
    }
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    with atomic_open(out_dir / META_FILE, encoding="utf-8") as f:
        json.dump({"special_tokens": list(special_tokens), "vocab_size": len(vocab), **(meta or {}), "files": digests}, f,
                  indent=2)
    for name, data in contents.items():
        with atomic_open(out_dir / name, "wb") as f:
            f.write(data)


def load_vocab(vocab_path: str | Path) -> dict[int, bytes]:
    """A GPT-2 vocab.json: a JSON object of distinct non-empty tokens to distinct ids 0 .. 2^31 - 1."""
    vocab_path = Path(vocab_path)
    raw = read_json(vocab_path, "vocabulary")
    if not isinstance(raw, dict):
        raise LmcliError(f"{vocab_path} is not a GPT-2 vocab.json (a JSON object of token -> id)")
    bad = [i for i in raw.values() if not _is_id(i)]
    if bad:
        raise LmcliError(f"{vocab_path}: token ids must be integers from 0 to 2^31 - 1, got {shown(bad[0])}")
    if len(set(raw.values())) < len(raw):
        raise LmcliError(f"{vocab_path}: an id is given to two tokens")
    if "" in raw:
        raise LmcliError(f"{vocab_path}: a token is the empty string")
    return {i: str_to_token(s) for s, i in raw.items()}


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31


def load_merges(merges_path: str | Path) -> list[tuple[bytes, bytes]]:
    """A GPT-2 merges.txt: one merge a line, two non-empty tokens separated by one space."""
    merges_path = Path(merges_path)
    lines = read_utf8(merges_path, "merges file").split("\n")
    if lines[0].startswith("#version"):
        lines[0] = ""
    merges = []
    for lineno, line in enumerate(lines, 1):
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise LmcliError(f"{merges_path}:{lineno}: expected two tokens separated by a space, got {line[:60]!r}")
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
    """The tokenizer's metadata, checked, or {} for a directory without one (e.g. GPT-2's own files)."""
    path = Path(tokenizer_dir) / META_FILE
    if not path.exists():
        return {}
    meta = read_json(path, "tokenizer metadata")
    problem = _meta_problem(meta)
    if problem:
        raise LmcliError(f"{path}: {problem}")
    return meta


def _meta_problem(meta: Any) -> str | None:
    if not isinstance(meta, dict):
        return "not a JSON object"
    specials = meta.get("special_tokens", [])
    if not isinstance(specials, list) or not all(isinstance(t, str) and t for t in specials):
        return "special_tokens must be a list of non-empty strings"
    if "vocab_size" in meta and not (_is_id(meta["vocab_size"]) and meta["vocab_size"] > 0):
        return "vocab_size must be a positive integer"
    files = meta.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        return "files must map file names to SHA-256 digests"
    return None


def tokenizer_paths(tokenizer_dir: str | Path) -> tuple[Path, Path]:
    """vocab.json and merges.txt of a tokenizer directory, after checking they are there and, where its
    tokenizer-meta.json records their digests, that they are the files it was written with."""
    tokenizer_dir = Path(tokenizer_dir)
    if not tokenizer_dir.is_dir():
        if tokenizer_dir.exists():
            raise LmcliError(f"tokenizer {tokenizer_dir} is a file: give the directory that holds {VOCAB_FILE} and {MERGES_FILE}")
        raise LmcliError(f"tokenizer directory {tokenizer_dir} does not exist (run `lmcli train-bpe` first)")
    paths = tokenizer_dir / VOCAB_FILE, tokenizer_dir / MERGES_FILE
    for p in paths:
        if not p.is_file():
            raise LmcliError(f"{tokenizer_dir} is not a tokenizer directory: {p.name} is missing")
    for name, digest in read_meta(tokenizer_dir).get("files", {}).items():
        if name in (VOCAB_FILE, MERGES_FILE) and hashlib.sha256((tokenizer_dir / name).read_bytes()).hexdigest() != digest:
            raise LmcliError(
                f"{tokenizer_dir / name} is not the file {META_FILE} was written with (a write interrupted part-way, "
                "or an edit): train it again with `lmcli train-bpe --force`, or restore the directory"
            )
    return paths


def tokenizer_fingerprint(tokenizer_dir: str | Path) -> str:
    """SHA-256 over vocab.json and merges.txt: identifies the exact tokenizer a model was trained with."""
    digest = hashlib.sha256()
    for p in tokenizer_paths(tokenizer_dir):
        digest.update(p.read_bytes())
    return digest.hexdigest()[:16]
