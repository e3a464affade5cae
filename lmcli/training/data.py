"""Training data: token ids on disk, memory-mapped, sampled as random context windows.

``lmcli encode`` writes a corpus as flat ``.npy`` arrays of token ids (uint16 or uint32), one
file or several shards (``lmcli.data.token_shards``), opened as memory maps: the operating
system pages in only the parts a batch touches, so a corpus larger than RAM trains as well as a
small one.

A batch is ``batch_size`` windows of ``context_length + 1`` consecutive ids starting at
uniformly random offsets; the inputs are the first ``context_length`` ids of each window and
the targets the same window shifted by one (the next token at every position). ``get_batch``
is the CS336 function for one array; a run draws window positions over all its shards with
``draw_positions`` and reads the micro-batches of its rank (``batch_plan``) with ``read_batch``.

Before training, ``scan_shards`` reads the files once in chunks to check every id fits the
model's vocabulary and to count token frequencies, from which ``unigram_entropy`` gives the
loss of the best model that ignores context: the number a language model must beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmcli.data.token_shards import TokenShards
from lmcli.errors import LmcliError
from lmcli.progress import SILENT, Progress
from lmcli.tokenizer.encode_file import check_encoded_with
from lmcli.tokenizer.files import load_vocab, read_meta, tokenizer_fingerprint, tokenizer_paths

SCAN_CHUNK = 1 << 24  # ids per chunk when scanning a memmap (64 MiB of uint32 at most)
Source = tuple[str, float, Sequence[Path]]  # a dataset of a mixture: name, weight, its token files


def get_batch(
    x: np.ndarray, batch_size: int, context_length: int, device: str | torch.device,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of ``x``: (inputs, next-token targets), each [batch_size, context_length] int64."""
    data = TokenShards([x])
    return read_batch(data, draw_positions(data, batch_size, context_length, generator), context_length, device)


def draw_positions(
    data: TokenShards, batch_size: int, context_length: int, generator: torch.Generator | None = None
) -> np.ndarray:
    """``batch_size`` uniformly random window positions of ``data`` (see ``TokenShards``). A mixture
    first draws each window's source by weight, then a uniform window of that source: one seeded
    stream either way, so a resumed run draws what the uninterrupted one would have."""
    if len(data.groups) == 1:
        return torch.randint(data.num_windows(context_length), (batch_size,), generator=generator).numpy()
    windows = data.group_windows(context_length)
    first = np.concatenate([[0], np.cumsum(windows)[:-1]])
    weights = torch.tensor([g.weight for g in data.groups], dtype=torch.float64)
    sources = torch.multinomial(weights, batch_size, replacement=True, generator=generator).numpy()
    uniform = torch.rand(batch_size, dtype=torch.float64, generator=generator).numpy()  # 53 bits: no bias for any size
    return first[sources] + np.minimum((uniform * windows[sources]).astype(np.int64), windows[sources] - 1)


def read_batch(
    data: TokenShards, positions: np.ndarray, context_length: int, device: str | torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of the windows at ``positions``, on ``device``."""
    batch = torch.from_numpy(data.read(positions, context_length))  # reads only these ids from the memmaps
    if torch.device(device).type == "cuda":
        batch = batch.pin_memory().to(device, non_blocking=True)
    else:
        batch = batch.to(device)
    # contiguous: the same strides as an evaluation batch padded with torch.cat (a compiled model
    # guards on strides, and would compile again for a different layout)
    return batch[:, :-1].contiguous(), batch[:, 1:].contiguous()


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
    return scan_shards(TokenShards([x], [path]), vocab_size, progress)


def scan_shards(data: TokenShards, vocab_size: int, progress: Progress = SILENT) -> TokenStats:
    """``scan_tokens`` over every shard of ``data``, as one count."""
    name = data.paths[0].name if len(data.paths) == 1 else f"{len(data.paths)} files"
    task = progress.task(f"checking {name}", total=data.nbytes, unit="bytes")
    counts = sum(count_ids(x, path, vocab_size, task.advance) for x, path in zip(data.arrays, data.paths))
    return TokenStats(count=len(data), counts=counts)


def count_ids(x: np.ndarray, path: Path, vocab_size: int, advance) -> np.ndarray:
    """Occurrences of each id of ``x``, read in chunks (``advance`` is told the bytes done)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
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
        advance(chunk.nbytes)
    return counts


@dataclass(frozen=True)
class TrainingData:
    train: TokenShards
    valid: TokenShards
    train_stats: TokenStats
    tokenizer_dir: Path
    tokenizer_fingerprint: str
    text_bytes: np.ndarray  # bytes of text per id (text_bytes_per_id): bits per byte's denominator


def text_bytes_per_id(tokenizer_dir: Path) -> np.ndarray:
    """How many bytes of text each id stands for (int64, indexed by id); special tokens count 0:
    they separate documents, they are not text."""
    vocab_path, _ = tokenizer_paths(tokenizer_dir)
    vocab = load_vocab(vocab_path)
    lengths = np.zeros(max(vocab, default=-1) + 1, dtype=np.int64)
    lengths[list(vocab)] = [len(token) for token in vocab.values()]
    specials = {token.encode("utf-8") for token in read_meta(tokenizer_dir).get("special_tokens", [])}
    lengths[[i for i, token in vocab.items() if token in specials]] = 0
    return lengths


def load_training_data(
    train_sources: Sequence[Source], valid_sources: Sequence[Source], tokenizer_dir: Path, vocab_size: int,
    context_length: int, progress: Progress = SILENT,
) -> TrainingData:
    """Open and check everything a run reads (every shard, every id), so bad input fails before the first step.
    Each split is a list of (name, weight, paths) sources: one for a plain dataset, several for a mixture."""
    fingerprint = check_tokenizer(tokenizer_dir, vocab_size)
    every_path = [p for sources in (train_sources, valid_sources) for _, _, paths in sources for p in paths]
    check_encoded_with(every_path, fingerprint, f"the tokenizer in {tokenizer_dir} (data.tokenizer)")
    train = TokenShards.mixture(train_sources, "training data", context_length)
    valid = TokenShards.mixture(valid_sources, "validation data", context_length)
    train_stats = scan_shards(train, vocab_size, progress)
    scan_shards(valid, vocab_size, progress)
    return TrainingData(train, valid, train_stats, tokenizer_dir, fingerprint, text_bytes_per_id(tokenizer_dir))


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
