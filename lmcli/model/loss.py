"""Cross-entropy of next-token predictions, computed stably from raw logits.

For logits ``o`` over a vocabulary and the true token ``y``::

    loss = -log softmax(o)[y] = -o[y] + log sum_j exp(o[j])
         = -(o[y] - m) + log sum_j exp(o[j] - m)        with m = max_j o[j]

Subtracting the maximum keeps every ``exp`` at most 1 (no overflow), and writing the loss as
``logsumexp - o[y]`` cancels the ``log`` against the ``exp`` of the softmax instead of taking
the log of a probability that may have underflowed to 0. The loss is averaged over every
leading (batch, time) position whose target is not ``IGNORE`` (the padding rows that give an
evaluation's last batch the training shape). Logits are upcast to float32 first, so the loss is
accurate even when the model runs under bf16 autocast.

``linear_cross_entropy`` is the loss of the logits ``x Wᵀ`` of the output head: what the
model's forward returns when it is given the targets, so that the loss runs inside the
compiled model. With the default kernels it never holds all (positions × vocab) logits at once.

``kernels="reference"`` computes exactly these expressions and lets autograd differentiate them;
the default ``"fast"`` runs ``lmcli.model.kernels``' versions, the same loss with its gradient
(softmax(o) - onehot(y)) / N written by hand; ``"torch"`` runs PyTorch's own cross-entropy
(``lmcli.model.torch_kernels``).
"""

from __future__ import annotations

import torch

from lmcli.model import kernels as fast
from lmcli.model import torch_kernels
from lmcli.model.kernels import IGNORE


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, kernels: str = "fast") -> torch.Tensor:
    """Mean cross-entropy of ``logits`` [..., vocab] against integer ``targets`` [...] (``IGNORE`` ones left out)."""
    if kernels == "torch":
        return torch_kernels.cross_entropy(logits, targets)
    if kernels != "reference":
        return fast.cross_entropy(logits, targets)  # the same loss, its gradient written by hand
    logits = logits.float()
    shifted = logits - logits.amax(dim=-1, keepdim=True).detach()  # the shift changes no gradient
    log_sum_exp = shifted.exp().sum(dim=-1).log()
    losses = log_sum_exp - shifted.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    counted = targets != IGNORE
    return (losses * counted).sum() / counted.sum()


def soft_capped(logits: torch.Tensor, cap: float) -> torch.Tensor:
    """cap · tanh(logits / cap): about the logits where they are small, never beyond ±cap (Gemma 2's soft-capping)."""
    return cap * torch.tanh(logits / cap)


def linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, kernels: str = "fast", vocab: int | None = None,
    z_loss: float = 0.0, softcap: float = 0.0,
) -> torch.Tensor:
    """``cross_entropy(x @ weight.T, targets)``: the loss of the output head's logits, from its input ``x``.
    With ``vocab``, only the first ``vocab`` logits count (the other rows of ``weight`` are padding); with
    ``z_loss``, plus z_loss · mean(log Z²), Z = Σ_j exp o_j, which keeps the logits from drifting
    (PaLM's z-loss); with ``softcap``, of the soft-capped logits."""
    return loss_and_z_term(x, weight, targets, kernels, vocab, z_loss, softcap)[0]


def loss_and_z_term(
    x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, kernels: str = "fast", vocab: int | None = None,
    z_loss: float = 0.0, softcap: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``linear_cross_entropy``, and its z-loss term z_loss · mean(log Z²) alone, without gradient: the
    loss minus that term is the cross-entropy, what a run reports as its loss."""
    if kernels in ("reference", "torch"):
        logits = (x @ weight.T)[..., :vocab]
        logits = soft_capped(logits, softcap) if softcap else logits
        loss = cross_entropy(logits, targets, kernels)
        if not z_loss:
            return loss, torch.zeros((), device=loss.device)
        z_term = z_loss * squared_log_normalizer(logits, targets)
        return loss + z_term, z_term.detach()
    return fast.linear_cross_entropy(x, weight, targets, vocab, z_loss, softcap)  # a chunk of logits at a time


def squared_log_normalizer(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of (log Σ_j exp o_j)² over the rows whose target is not IGNORE, in float32."""
    logits = logits.float()
    maxes = logits.amax(dim=-1, keepdim=True).detach()
    log_z = (logits - maxes).exp().sum(dim=-1).log() + maxes.squeeze(-1)
    counted = targets != IGNORE
    return (log_z.square() * counted).sum() / counted.sum()
