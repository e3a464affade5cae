"""GPT-2's tiktoken encoding built from the local fixture files (tiktoken's own ``get_encoding("gpt2")``
downloads its files at run time). Shared by the tests and the encode benchmark as the reference."""

from __future__ import annotations

import json
from pathlib import Path

import tiktoken

from lmcli.tokenizer.files import str_to_token
from lmcli.tokenizer.pretokenize import GPT2_SPLIT

ENDOFTEXT = "<|endoftext|>"


def gpt2_tiktoken(vocab_path: str | Path) -> tiktoken.Encoding:
    """tiktoken's ``gpt2`` encoding: ranks are the vocab ids, split by the GPT-2 regex, <|endoftext|> special."""
    vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
    ranks = {str_to_token(s): i for s, i in vocab.items() if s != ENDOFTEXT}
    return tiktoken.Encoding(
        name="gpt2-local",
        pat_str=GPT2_SPLIT,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: vocab[ENDOFTEXT]},
    )
