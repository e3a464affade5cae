"""lmcli's byte-level BPE as a Hugging Face ``tokenizer.json``, and a Hugging Face BPE read back.

``tokenizer.json`` (the ``tokenizers`` library's format, what ``AutoTokenizer`` loads) describes
exactly lmcli's pipeline: the special tokens split off first (``added_tokens``, longest match),
GPT-2's pre-tokenizer (``ByteLevel`` with its regex, no prefix space), BPE over the byte-level
alphabet with merges applied by rank, and the ``ByteLevel`` decoder. Tokens are written in
GPT-2's byte-to-unicode alphabet, as in ``vocab.json`` / ``merges.txt`` (also written, for
tools that read those).

Reading accepts ``tokenizer.json`` with a BPE model and a ByteLevel pre-tokenizer, or GPT-2's
``vocab.json`` + ``merges.txt``; anything else (SentencePiece, WordPiece, byte fallback, a
prefix space, a normalizer) would encode differently and is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmcli.errors import LmcliError
from lmcli.readers import read_json
from lmcli.tokenizer.files import MERGES_FILE, VOCAB_FILE, load_tokenizer_files, save_tokenizer, str_to_token, token_to_str

TOKENIZER_FILE = "tokenizer.json"
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


def tokenizer_json(vocab: dict[int, bytes], merges: list[tuple[bytes, bytes]], special_tokens: list[str]) -> dict[str, Any]:
    specials = {s.encode("utf-8"): s for s in special_tokens}
    special_ids = {i: specials[t] for i, t in vocab.items() if t in specials}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, s in sorted(special_ids.items())],
        "normalizer": None,
        "pre_tokenizer": BYTE_LEVEL,
        "post_processor": None,
        "decoder": BYTE_LEVEL,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {(special_ids[i] if i in special_ids else token_to_str(t)): i for i, t in sorted(vocab.items())},
            "merges": [[token_to_str(a), token_to_str(b)] for a, b in merges],
        },
    }


def write_hf_tokenizer(out_dir: Path, vocab: dict[int, bytes], merges: list[tuple[bytes, bytes]], special_tokens: list[str],
                       context_length: int) -> None:
    """tokenizer.json, tokenizer_config.json, special_tokens_map.json, vocab.json and merges.txt into ``out_dir``."""
    (out_dir / TOKENIZER_FILE).write_text(json.dumps(tokenizer_json(vocab, merges, special_tokens), ensure_ascii=False), encoding="utf-8")
    first = special_tokens[0] if special_tokens else None
    roles = {"bos_token": first, "eos_token": first} if first else {}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context_length,
              "clean_up_tokenization_spaces": False, "add_bos_token": False, "add_eos_token": False, **roles}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(roles, indent=2), encoding="utf-8")
    save_tokenizer(out_dir, vocab, merges, special_tokens)


def read_hf_tokenizer(model_dir: Path) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]], list[str]]:
    """(vocab, merges, special tokens) of a Hugging Face tokenizer directory."""
    path = model_dir / TOKENIZER_FILE
    if path.is_file():
        return parse_tokenizer_json(read_json(path, "tokenizer"), path)
    if (model_dir / VOCAB_FILE).is_file() and (model_dir / MERGES_FILE).is_file():
        vocab, merges = load_tokenizer_files(model_dir / VOCAB_FILE, model_dir / MERGES_FILE)
        specials = [t.decode("utf-8") for t in vocab.values() if t == b"<|endoftext|>"]
        return vocab, merges, specials
    raise LmcliError(f"{model_dir} has no tokenizer: neither {TOKENIZER_FILE} nor {VOCAB_FILE} + {MERGES_FILE}")


def parse_tokenizer_json(content: Any, path: Path) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]], list[str]]:
    model = content.get("model") if isinstance(content, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        kind = model.get("type") if isinstance(model, dict) else "no"
        raise LmcliError(f"{path} holds a {kind} model, not byte-level BPE: lmcli's tokenizer cannot represent it")
    pre = content.get("pre_tokenizer") or {}
    if not isinstance(pre, dict):
        raise LmcliError(f"{path}: its pre_tokenizer is a {type(pre).__name__}, not a JSON object")
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    if not (isinstance(steps, list) and all(isinstance(step, dict) for step in steps)):
        raise LmcliError(f"{path}: its pre_tokenizer's pretokenizers are not a list of JSON objects")
    if [s.get("type") for s in steps] != ["ByteLevel"] or steps[0].get("add_prefix_space") or not steps[0].get("use_regex", True):
        raise LmcliError(f"{path}: the pre-tokenizer is not GPT-2's ByteLevel (no prefix space, its regex): encoding would differ")
    if content.get("normalizer") or model.get("byte_fallback") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise LmcliError(f"{path}: a normalizer, byte fallback or subword affixes: lmcli's byte-level BPE has none")
    if not isinstance(content.get("added_tokens", []), list):
        raise LmcliError(f"{path}: its added_tokens are not a list")
    try:
        added = {t["id"]: t["content"] for t in content.get("added_tokens", []) if t.get("special")}
        vocab = {i: added[i].encode("utf-8") if i in added else str_to_token(s) for s, i in model["vocab"].items()}
        vocab.update({i: s.encode("utf-8") for i, s in added.items()})
        pairs = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
        merges = [(str_to_token(a), str_to_token(b)) for a, b in pairs]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise LmcliError(f"{path} is not a readable BPE tokenizer ({type(e).__name__}: {e})") from None
    outside = next((i for i in vocab if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(vocab)), None)
    if outside is not None:
        raise LmcliError(f"{path}: token id {outside} is outside 0..{len(vocab) - 1}: the ids of its {len(vocab):,} tokens "
                         "must number them from 0 without gaps")
    return vocab, merges, list(added.values())
