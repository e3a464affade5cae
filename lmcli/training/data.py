"""Training data: token ids on disk, memory-mapped, sampled as random context windows.

``lmcli encode`` writes a corpus as one flat ``.npy`` array of token ids (uint16 or uint32),
opened as a memory map (``lmcli.data.token_files``): the operating system pages in only the
parts a batch touches, so a corpus larger than RAM trains as well as a small one.

A batch is ``batch_size`` windows of ``context_length + 1`` consecutive ids starting at
uniformly random offsets; the inputs are the first ``context_length`` ids of each window and
the targets the same window shifted by one (the next token at every position).

Before training, ``scan_tokens`` reads the file once in chunks to check every id fits the
model's vocabulary and to count token frequencies, from which ``unigram_entropy`` gives the
loss of the best model that ignores context: the number a language model must beat.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmcli.data.token_files import open_token_ids
from lmcli.errors import LmcliError
from lmcli.progress import SILENT, Progress
from lmcli.tokenizer.files import load_vocab, read_meta, tokenizer_fingerprint, tokenizer_paths

SCAN_CHUNK = 1 << 24  # ids per chunk when scanning a memmap (64 MiB of uint32 at most)


def get_batch(
    x: np.ndarray, batch_size: int, context_length: int, device: str | torch.device,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of ``x``: (inputs, next-token targets), each [batch_size, context_length] int64."""
    starts = torch.randint(len(x) - context_length, (batch_size,), generator=generator).numpy()
    return windows_at(x, starts, context_length, device)


def windows_at(
    x: np.ndarray, starts: np.ndarray, context_length: int, device: str | torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of the windows of ``context_length + 1`` ids at ``starts``, on ``device``."""
    windows = x[starts[:, None] + np.arange(context_length + 1)]  # reads only these ids from a memmap
    batch = torch.from_numpy(windows.astype(np.int64))
    if torch.device(device).type == "cuda":
        batch = batch.pin_memory().to(device, non_blocking=True)
    else:
        batch = batch.to(device)
    return batch[:, :-1], batch[:, 1:]


def sequential_batches(
    x: np.ndarray, batch_size: int, context_length: int, device: str | torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping windows covering ``x`` from the start, batched (the last batch may be short)."""
    n_windows = (len(x) - 1) // context_length
    for first in range(0, n_windows, batch_size):
        starts = np.arange(first, min(first + batch_size, n_windows)) * context_length
        yield windows_at(x, starts, context_length, device)


@dataclass(frozen=True)
class TokenStats:
    count: int
    counts: np.ndarray  # occurrences of each id, indexed by id

    @property
    def max_id(self) -> int:
        return int(np.flatnonzero(self.counts)[-1])

    def unigram_entropy(self) -> float:
        """Entropy in nats of the id frequencies: the loss of the best context-free predictor."""
        p = self.counts[self.counts > 0] / self.count
        return float(-(p * np.log(p)).sum())


def scan_tokens(x: np.ndarray, path: Path, vocab_size: int, progress: Progress = SILENT) -> TokenStats:
    """Count every id of ``x`` chunk by chunk; error if one is outside ``[0, vocab_size)``."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    task = progress.task(f"checking {path.name}", total=x.nbytes, unit="bytes")
    for start in range(0, len(x), SCAN_CHUNK):
        chunk = np.asarray(x[start : start + SCAN_CHUNK])
        if np.issubdtype(chunk.dtype, np.signedinteger) and chunk.min() < 0:
            raise LmcliError(f"{path} contains the negative token id {chunk.min()}")
        chunk_counts = np.bincount(chunk, minlength=vocab_size)  # longer than vocab_size: an id too large
        if len(chunk_counts) > vocab_size:
            raise LmcliError(
                f"{path} contains token id {len(chunk_counts) - 1}, outside the model's vocabulary of "
                f"{vocab_size:,} (was it encoded with another tokenizer? check model.vocab_size)"
            )
        counts += chunk_counts
        task.advance(chunk.nbytes)
    return TokenStats(count=len(x), counts=counts)


@dataclass(frozen=True)
class TrainingData:
    train: np.ndarray
    valid: np.ndarray
    train_stats: TokenStats
    tokenizer_dir: Path
    tokenizer_fingerprint: str


def load_training_data(
    train_path: Path, valid_path: Path, tokenizer_dir: Path, vocab_size: int, context_length: int,
    progress: Progress = SILENT,
) -> TrainingData:
    """Open and check everything a run reads, so bad input fails before the first step."""
    fingerprint = check_tokenizer(tokenizer_dir, vocab_size)
    train = open_token_ids(train_path, "training data", context_length + 1)
    valid = open_token_ids(valid_path, "validation data", context_length + 1)
    train_stats = scan_tokens(train, train_path, vocab_size, progress)
    scan_tokens(valid, valid_path, vocab_size, progress)
    return TrainingData(train, valid, train_stats, tokenizer_dir, fingerprint)


def check_tokenizer(tokenizer_dir: Path, vocab_size: int) -> str:
    """The tokenizer's fingerprint, after checking its vocabulary has exactly the model's size.

    A size mismatch means the model and the data were made for different tokenizers; a BPE that
    ran out of merges before its target size says so, and the config is set to what it wrote.
    """
    vocab_path, _ = tokenizer_paths(tokenizer_dir)
    size = read_meta(tokenizer_dir).get("vocab_size") or len(load_vocab(vocab_path))
    if size != vocab_size:
        raise LmcliError(
            f"the tokenizer in {tokenizer_dir} has {size:,} tokens but model.vocab_size is {vocab_size:,} "
            f"(set model.vocab_size = {size} or point data.tokenizer at the tokenizer the data was encoded with)"
        )
    return tokenizer_fingerprint(tokenizer_dir)
