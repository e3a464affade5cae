"""How the global batch of one optimizer step is divided among processes and micro-batches.

``training.batch_size`` (B) sequences make one optimizer step, on any hardware. With N
processes and micro-batches of ``training.micro_batch_size`` (M) sequences, each process runs
B / (M·N) micro-batches per step (gradient accumulation), and B must be a multiple of M·N::

    global batch (B window positions, drawn by every rank from the same seeded generator)
    rank r takes rows [r·B/N, (r+1)·B/N), split into micro-batches of M rows

Every rank draws the same B positions, so the set of windows in step k is the same for 1
process with B = M, 1 process with accumulation, or N processes: what changes with the
hardware is only the order in which floating-point sums are taken. The generator's state
is the same on every rank, which is why a checkpoint of any rank resumes any world size.

Evaluation over a list of windows (the final pass over the validation data) hands out
micro-batches round-robin; every rank runs the same number of forward passes (FSDP gathers
weights in each one, with all ranks taking part), the last ones padded with a repeated
micro-batch counted with weight 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmcli.training.config import TrainConfig
from lmcli.training.distributed import World


@dataclass(frozen=True)
class BatchPlan:
    batch_size: int  # the global batch, sequences per optimizer step
    micro_batch_size: int  # sequences in one forward pass of one process
    world: World

    @classmethod
    def of(cls, config: TrainConfig, world: World) -> BatchPlan:
        config.accumulation_steps(world.size)  # checks that the batch divides
        return cls(config.training.batch_size, config.micro_batch_size(world.size), world)

    @property
    def accumulation_steps(self) -> int:
        return self.batch_size // (self.micro_batch_size * self.world.size)

    def micro_batches(self, positions: np.ndarray) -> list[np.ndarray]:
        """This rank's micro-batches of a global batch of ``batch_size`` window positions."""
        share = len(positions) // self.world.size
        mine = positions[self.world.rank * share : (self.world.rank + 1) * share]
        return [mine[i : i + self.micro_batch_size] for i in range(0, share, self.micro_batch_size)]

    def shared_batches(self, positions: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """This rank's (micro-batch, weight) pairs when ``positions`` are divided among the ranks round-robin;
        every rank gets the same number, padded with weight-0 repeats."""
        batches = [positions[i : i + self.micro_batch_size] for i in range(0, len(positions), self.micro_batch_size)]
        rounds = -(-len(batches) // self.world.size)
        mine = []
        for r in range(rounds):
            index = r * self.world.size + self.world.rank
            mine.append((batches[index], 1.0) if index < len(batches) else (batches[0], 0.0))
        return mine
