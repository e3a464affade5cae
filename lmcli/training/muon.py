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
(``optimizer.muon_lr / optimizer.lr``). With DDP every rank has the same averaged gradients and
takes the same step; FSDP's sharded matrices would have to be gathered whole first, which is not
done: Muon refuses FSDP.
"""

from __future__ import annotations

import torch

from lmcli.training.optim import AdamW

NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def newton_schulz(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """About the orthogonal factor U V^T of ``G``'s SVD (a 2-D matrix), by the quintic iteration, in float32."""
    a, b, c = NEWTON_SCHULZ
    X = G.float()
    tall = X.shape[0] > X.shape[1]
    if tall:  # iterate on the wide orientation: X X^T is the smaller square
        X = X.T
    X = X / (X.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


def is_block_matrix(name: str, p: torch.nn.Parameter) -> bool:
    """The matrices Muon updates: 2-D weights inside the blocks (projections, feed-forward)."""
    return p.ndim == 2 and name.startswith("layers.")


class Muon(AdamW):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01,
                 momentum: float = 0.95):
        if not 0 <= momentum < 1:
            raise ValueError(f"invalid momentum {momentum}: must be in [0, 1)")
        super().__init__(params, lr, betas, eps, weight_decay)
        self.defaults["momentum"] = momentum

    def _update_group(self, group: dict, params: list[torch.nn.Parameter]) -> None:
        if not group.get("muon"):
            return super()._update_group(group, params)
        lr, mu, weight_decay = group["lr"], group.get("momentum", self.defaults["momentum"]), group["weight_decay"]
        for p in params:
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buffer = state["momentum_buffer"]
            buffer.lerp_(p.grad, 1 - mu)
            update = newton_schulz(p.grad.lerp(buffer, mu)).to(p.dtype)
            p.mul_(1 - lr * weight_decay)
            p.add_(update, alpha=-lr * max(1.0, p.shape[0] / p.shape[1]) ** 0.5)


def muon_groups(model: torch.nn.Module, adamw_groups: list[dict], lr_scale: float, weight_decay: float,
                momentum: float) -> list[dict]:
    """``adamw_groups`` (from ``decay_groups``) without the block matrices, and one Muon group of them."""
    matrices = [p for n, p in model.named_parameters() if p.requires_grad and is_block_matrix(n, p)]
    taken = {id(p) for p in matrices}
    rest = [{**g, "params": [p for p in g["params"] if id(p) not in taken]} for g in adamw_groups]
    muon = {"params": matrices, "muon": True, "lr_scale": lr_scale, "weight_decay": weight_decay, "momentum": momentum}
    return [g for g in rest if g["params"]] + [muon]
