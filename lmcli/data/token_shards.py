"""A dataset of several token-id files (shards), read as context windows that never straddle two.

A large corpus is often encoded in pieces: one ``lmcli encode`` run per input file or per
machine, each writing its own ``.npy``. ``data.train`` / ``data.valid`` name such a dataset as
one path, a glob pattern (``data/owt-*.npy``), a directory of shards with a manifest (``lmcli
encode --shard-tokens``, its parts merged) or a list of these.

Each shard is a memory map (``lmcli.data.token_files``), so memory stays bounded by what is
read, not by the total size. A window of ``context + 1`` ids starts at an offset ``o`` of one
shard with ``o + context < len(shard)``. All valid starts of all shards are numbered in one
sequence, shard after shard (the *position* of a window)::

    position = (starts in the shards before this one) + o

so that a uniformly random position is a uniformly random window of the whole dataset, and a
dataset of one file numbers its windows exactly as ``get_batch`` does (``o`` itself).
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmcli.data.token_files import open_token_ids
from lmcli.errors import LmcliError
from lmcli.tokenizer.encode_shards import dataset_shards


def shard_paths(spec: str | Sequence[str], resolve: Callable[[str], Path] = Path) -> list[Path]:
    """The files a ``data.train``-style value names: paths and glob patterns, in order, each pattern's
    matches sorted; ``resolve`` turns a config string into a path (e.g. relative to the workspace)."""
    paths: list[Path] = []
    for item in [spec] if isinstance(spec, str) else spec:
        path = resolve(item)
        if path.is_dir():  # a dataset that `lmcli encode --shard-tokens` wrote: its manifest lists the shards
            paths += dataset_shards(path)
        elif glob.has_magic(str(path)) and not path.exists():  # a file named x[1].npy is that file, not a pattern
            matches = sorted(Path(m) for m in glob.glob(str(path)))
            if not matches:
                raise LmcliError(f"no file matches {path}")
            paths += matches
        else:
            paths.append(path)
    if not paths:
        raise LmcliError("an empty list of token files")
    return paths


@dataclass(frozen=True)
class ShardGroup:
    """One source of a mixture: a run of consecutive shards, drawn from with a weight."""

    name: str
    weight: float
    shards: int  # how many shards, following those of the groups before it


class TokenShards:
    """Token-id arrays read as one dataset of context windows; as a mixture, its shards fall into
    ``groups`` (sources), which training draws windows from by weight (``training.data.draw_positions``)."""

    def __init__(self, arrays: Sequence[np.ndarray], paths: Sequence[Path] = (), groups: Sequence[ShardGroup] = ()):
        self.arrays, self.paths = list(arrays), list(paths)
        self.groups = list(groups) or [ShardGroup("", 1.0, len(self.arrays))]

    @classmethod
    def open(cls, paths: Sequence[Path], what: str, context: int) -> TokenShards:
        """Memory-map every shard, each long enough for one window of ``context + 1`` ids."""
        return cls([open_token_ids(p, what, context + 1) for p in paths], paths)

    @classmethod
    def mixture(cls, sources: Sequence[tuple[str, float, Sequence[Path]]], what: str, context: int) -> TokenShards:
        """The shards of every (name, weight, paths) source, one group each, in order."""
        parts = [cls.open(paths, f"{what} ({name})" if len(sources) > 1 else what, context) for name, _, paths in sources]
        groups = [ShardGroup(name, weight, len(part.arrays)) for (name, weight, _), part in zip(sources, parts)]
        return cls([a for part in parts for a in part.arrays], [p for part in parts for p in part.paths], groups)

    def group(self, index: int) -> TokenShards:
        """The shards of one group, as a dataset of their own."""
        first = sum(g.shards for g in self.groups[:index])
        end = first + self.groups[index].shards
        return TokenShards(self.arrays[first:end], self.paths[first:end])

    def group_windows(self, context: int) -> np.ndarray:
        """How many windows each group has (see ``num_windows``)."""
        ends = np.cumsum([g.shards for g in self.groups])
        per_shard = np.concatenate([[0], np.cumsum(self._starts_per_shard(context))])
        return per_shard[ends] - per_shard[ends - np.array([g.shards for g in self.groups])]

    def __len__(self) -> int:
        return sum(len(a) for a in self.arrays)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)

    def num_windows(self, context: int) -> int:
        """How many positions a window of ``context + 1`` ids can start at."""
        return int(self._starts_per_shard(context).sum())

    def sequential_positions(self, context: int) -> np.ndarray:
        """Positions of non-overlapping windows covering each shard from its start, shard after shard
        (every id predicted once)."""
        before = np.concatenate([[0], np.cumsum(self._starts_per_shard(context))[:-1]])
        per_shard = [base + np.arange((len(a) - 1) // context) * context for base, a in zip(before, self.arrays)]
        return np.concatenate(per_shard)

    def prefix(self, max_tokens: int, context: int) -> TokenShards:
        """The dataset cut so that its sequential windows are the first ``max_tokens // context`` of this
        one's (all of them when ``max_tokens`` is 0): what a capped evaluation reads, and all it checks."""
        if not max_tokens:
            return self
        arrays, paths, windows_left = [], [], max_tokens // context
        for array, path in zip(self.arrays, self.paths or [None] * len(self.arrays)):
            windows = min((len(array) - 1) // context, windows_left)
            if windows == 0:
                break
            arrays.append(array[: windows * context + 1])
            paths.append(path)
            windows_left -= windows
        return TokenShards(arrays, paths if self.paths else ())

    def read(self, positions: np.ndarray, context: int) -> np.ndarray:
        """The windows of ``context + 1`` ids at ``positions``, as an int64 array [len(positions), context + 1]."""
        starts = self._starts_per_shard(context)
        ends = np.cumsum(starts)
        shard = np.searchsorted(ends, positions, side="right")
        offsets = positions - (ends - starts)[shard]
        windows = np.empty((len(positions), context + 1), dtype=np.int64)
        for s in np.unique(shard):
            rows = shard == s
            windows[rows] = self.arrays[s][offsets[rows][:, None] + np.arange(context + 1)]  # reads only these ids
        return windows

    def _starts_per_shard(self, context: int) -> np.ndarray:
        return np.array([len(a) - context for a in self.arrays], dtype=np.int64)
