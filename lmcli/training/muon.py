"""Muon: momentum, then the update orthogonalized, for the 2-D weight matrices inside the blocks.

For a weight matrix W with gradient G (Keller Jordan's Muon, as in modded-nanogpt)::

    B <- mu B + (1 - mu) G                      momentum buffer
    U <- (1 - mu) G + mu B                      Nesterov: the gradient pulled towards the buffer
    O <- NewtonSchulz5(U)                       about U's nearest semi-orthogonal matrix, U V^T of its SVD
    W <- W (1 - lr wd) - lr sqrt(max(1, rows / cols)) O

Orthogonalizing gives every direction of the update the same size, however skewed the
gradient's spectrum; the shape factor keeps tall matrices' per-entry steps in line. The quintic
Newton-Schulz iteration, on X = U / ||U||_F (all singular values at most 1), repeats
X <- a X + (b A + c A^2) X with A = X X^T and (a, b, c) = (3.4445, -4.7750, 2.0315), chosen to
push every singular value into about [0.7, 1.2] in 5 steps: a cheap stand-in for the SVD,
made of matrix products only.

Everything that is not such a matrix (embeddings, the output head, norm gains) keeps AdamW, in
the same optimizer: ``Muon`` is ``AdamW`` whose groups marked ``muon`` take this update
instead. Their learning rate follows the run's schedule scaled by ``lr_scale``
(``optimizer.muon_lr / optimizer.lr``). The token embeddings and the output head may have rates of
their own the same way (``optimizer.embedding_lr``, ``head_lr``; under AdamW as well): the rows of
the embedding table learn only when their token appears and take a far higher rate than the head.

Fast and parallel: ``newton_schulz`` takes a stack of matrices, so ``orthogonalized`` runs the
iteration once for all matrices of one shape (every layer's q_proj together, ...) instead of once
per matrix (equal: a test); on GPUs in bfloat16, as modded-nanogpt does (the iteration converges
anyway; on the CPU float32). With DDP every rank has the same averaged gradients and takes the
same step. Under FSDP each rank holds a slice of every matrix: the momentum (elementwise) stays
sliced, and the Nesterov update of each matrix is gathered whole, orthogonalized on every rank
(the same work everywhere: simple, and one all-gather per matrix) and sliced back, so the step
equals the unsharded one.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from lmcli.training.optim import AdamW, decay_groups

if TYPE_CHECKING:
    from lmcli.training.config import OptimizerConfig

NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def newton_schulz(G: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """About the orthogonal factor U V^T of the SVD of ``G`` (a matrix, or a stack of same-shaped
    matrices ``(..., rows, cols)``, each on its own), by the quintic iteration, in ``dtype``."""
    a, b, c = NEWTON_SCHULZ
    X = G.to(dtype).reshape(-1, *G.shape[-2:])  # a stack (n, rows, cols), the shape baddbmm takes
    tall = X.shape[-2] > X.shape[-1]
    if tall:  # iterate on the wide orientation: X X^T is the smaller square
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b A + c A^2, the scaling inside the product's kernel
        X = torch.baddbmm(X, B, X, beta=a)  # a X + B X (a third faster than the plain expression on CPUs)
    return (X.mT if tall else X).reshape(G.shape)


def orthogonalized(updates: list[torch.Tensor], dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """``newton_schulz`` of every matrix, those of one shape stacked into one batched iteration. A
    sharded (FSDP) matrix is gathered whole first and its result sliced back like it."""
    whole = [u.full_tensor() if isinstance(u, DTensor) else u for u in updates]
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, u in enumerate(whole):
        by_shape[tuple(u.shape)].append(i)
    results: list[torch.Tensor] = [torch.empty(0)] * len(updates)
    for indices in by_shape.values():
        for i, result in zip(indices, newton_schulz(torch.stack([whole[i] for i in indices]), dtype=dtype)):
            results[i] = result
    return [distribute_tensor(r, u.device_mesh, u.placements, src_data_rank=None) if isinstance(u, DTensor) else r
            for r, u in zip(results, updates)]


def is_block_matrix(name: str, p: torch.nn.Parameter) -> bool:
    """The matrices Muon updates: 2-D weights inside the blocks (projections, feed-forward)."""
    return p.ndim == 2 and name.startswith("layers.")


class Muon(AdamW):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01,
                 momentum: float = 0.95, dtype: torch.dtype = torch.float32):
        if not 0 <= momentum < 1:
            raise ValueError(f"invalid momentum {momentum}: must be in [0, 1)")
        super().__init__(params, lr, betas, eps, weight_decay)
        self.defaults["momentum"] = momentum
        self.dtype = dtype  # of the Newton-Schulz iteration

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "momentum": self.defaults["momentum"], "dtype": self.dtype}

    def _update_group(self, group: dict, params: list[torch.nn.Parameter]) -> None:
        if not group.get("muon"):
            return super()._update_group(group, params)
        lr, mu, weight_decay = group["lr"], group.get("momentum", self.defaults["momentum"]), group["weight_decay"]
        nesterov = []
        for p in params:
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buffer = state["momentum_buffer"]
            buffer.lerp_(p.grad, 1 - mu)
            nesterov.append(p.grad.lerp(buffer, mu))
        for p, update in zip(params, orthogonalized(nesterov, self.dtype)):
            p.mul_(1 - lr * weight_decay)
            p.add_(update.to(p.dtype), alpha=-lr * max(1.0, p.shape[0] / p.shape[1]) ** 0.5)


def optimizer_groups(model: torch.nn.Module, o: OptimizerConfig) -> list[dict]:
    """The parameter groups of ``o``'s optimizer: AdamW's decay groups, with Muon its matrices apart, and
    the embeddings and the head apart where they have rates of their own."""
    groups = decay_groups(model, o.weight_decay, list(o.no_decay))
    if o.name == "muon":
        groups = muon_groups(model, groups, o.muon_lr / o.lr, o.muon_weight_decay, o.muon_momentum)
    return own_rate_groups(model, groups, {"token_embeddings.weight": o.embedding_lr, "lm_head.weight": o.head_lr}, o.lr)


def own_rate_groups(model: torch.nn.Module, groups: list[dict], rates: dict[str, float], lr: float) -> list[dict]:
    """``groups`` with each parameter named in ``rates`` with a rate (> 0) in a group of its own, its
    group's settings otherwise, at that rate's share of ``lr`` (the schedule scales every group alike).
    Embeddings want a far higher rate than the head (each row only learns when its token appears;
    modded-nanogpt and nanochat set them apart too)."""
    chosen = {id(p): rates[name] / lr for name, p in model.named_parameters() if rates.get(name, 0.0) > 0}
    result = []
    for group in groups:
        result.append({**group, "params": [p for p in group["params"] if id(p) not in chosen]})
        result += [{**group, "params": [p], "lr_scale": chosen[id(p)]} for p in group["params"] if id(p) in chosen]
    return [g for g in result if g["params"]]


def build_optimizer(model: torch.nn.Module, o: OptimizerConfig, device: torch.device) -> AdamW:
    """The optimizer ``o`` names, over ``model``'s parameters."""
    if o.name == "muon":  # bfloat16 Newton-Schulz on GPUs
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        return Muon(optimizer_groups(model, o), lr=o.lr, betas=o.betas, eps=o.eps, momentum=o.muon_momentum, dtype=dtype)
    return AdamW(optimizer_groups(model, o), lr=o.lr, betas=o.betas, eps=o.eps)


def muon_groups(model: torch.nn.Module, adamw_groups: list[dict], lr_scale: float, weight_decay: float,
                momentum: float) -> list[dict]:
    """``adamw_groups`` (from ``decay_groups``) without the block matrices, and one Muon group of them."""
    matrices = [p for n, p in model.named_parameters() if p.requires_grad and is_block_matrix(n, p)]
    taken = {id(p) for p in matrices}
    rest = [{**g, "params": [p for p in g["params"] if id(p) not in taken]} for g in adamw_groups]
    muon = {"params": matrices, "muon": True, "lr_scale": lr_scale, "weight_decay": weight_decay, "momentum": momentum}
    return [g for g in rest if g["params"]] + [muon]
