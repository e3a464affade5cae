"""Fast versions of the model's and the loss's heaviest steps, each equal to a plain one.

The plain code (``lmcli.model.attention``, ``lmcli.training.loss``) lets autograd differentiate
every elementwise step, which keeps each intermediate (N × keys or N × vocab) tensor alive and
runs a backward kernel per step. Here each step is one ``torch.autograd.Function`` whose
backward is written out by hand, working in place where it can. ``model.kernels = "fast"``
(the default) uses them; ``"reference"`` runs the plain code. The tests check that both give
the same values and gradients, on random inputs and through whole models.

- ``attention`` equals ``attention.scaled_dot_product_attention``: the (queries × keys) score
  matrix is built once, masked and normalised in place; the backward uses the FlashAttention
  identity rowsum(dP ⊙ P) = rowsum(dO ⊙ O), so the softmax's backward needs no second pass
  over the scores.
- ``rotate`` equals ``layers.rotate_pairs`` (RoPE): a rotation is orthogonal, so its
  gradient is the output's gradient rotated back, one pass instead of the backward of every
  multiply, add and stack.
- ``project_qkv`` equals three separate projections: one matmul against the stacked weights
  (one GPU kernel instead of three; the parameters stay separate, for the CS336 state dict).
- ``cross_entropy`` equals ``loss.cross_entropy``'s plain formula: the gradient
  (softmax(o) − onehot(y)) / N is written in place over the exponentials of the forward.
"""

from __future__ import annotations

import torch

from lmcli.model.layers import rotate_pairs

# ---------------------------------------------------------------- attention


def attention(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(Q Kᵀ / √d_k) V (mask True = attend), as ``scaled_dot_product_attention`` computes it."""
    Q = Q * Q.shape[-1] ** -0.5  # scale Q (…×d_k), cheaper than the scores (…×keys)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (Q, K, V)):
        return CausalAttention.apply(Q, K, V, mask)
    return attention_probabilities(Q, K, mask).to(V.dtype) @ V


def attention_probabilities(Q: torch.Tensor, K: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(Q Kᵀ) over the keys, masked, in (at least) float32; the score tensor is reused in place."""
    scores = (Q @ K.transpose(-2, -1)).to(torch.promote_types(Q.dtype, torch.float32))
    if mask is not None:
        scores.masked_fill_(mask.logical_not(), float("-inf"))
    scores -= scores.amax(dim=-1, keepdim=True)  # max-subtracted: exp never overflows
    return scores.exp_().mul_(scores.sum(dim=-1, keepdim=True).reciprocal_())


class CausalAttention(torch.autograd.Function):
    """O = P V with P = softmax(S), S = Q Kᵀ masked (Q already scaled), and its backward by hand:

        dV = Pᵀ dO        dP = dO Vᵀ        dS = P ⊙ (dP − D)        dQ = dS K        dK = dSᵀ Q

    where D = rowsum(dP ⊙ P) = rowsum(dO ⊙ O), since rowsum(dP ⊙ P)_i = Σ_j (dO_i · V_j) P_ij
    = dO_i · O_i: a (…×queries) reduction over d_v instead of over the keys. Masked entries have
    P = 0, so their dS is 0 without reapplying the mask. dS is computed in float32, in place in dP.
    """

    @staticmethod
    def forward(ctx, Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        P = attention_probabilities(Q, K, mask).to(V.dtype)
        O = P @ V
        ctx.save_for_backward(Q, K, V, P, O)
        return O

    @staticmethod
    def backward(ctx, dO: torch.Tensor):
        Q, K, V, P, O = ctx.saved_tensors
        dO = dO.to(O.dtype)
        dV = P.transpose(-2, -1) @ dO
        D = (dO * O).sum(dim=-1, keepdim=True, dtype=torch.promote_types(O.dtype, torch.float32))
        dS = (dO @ V.transpose(-2, -1)).to(D.dtype).sub_(D).mul_(P).to(Q.dtype)
        return dS @ K, dS.transpose(-2, -1) @ Q, dV, None


def project_qkv(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor):
    """(x W_qᵀ, x W_kᵀ, x W_vᵀ) in one matmul against the stacked weights."""
    return (x @ torch.cat((w_q, w_k, w_v)).T).chunk(3, dim=-1)


# ---------------------------------------------------------------- RoPE


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``rotate_pairs(x, cos, sin)`` with a one-pass backward."""
    return Rotation.apply(x, cos, sin)


class Rotation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return rotate_pairs(x, cos, sin)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return rotate_pairs(grad, cos, -sin), None, None


# ---------------------------------------------------------------- cross-entropy


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` [..., vocab] against ``targets`` [...], in float32."""
    return CrossEntropy.apply(logits.float(), targets)


class CrossEntropy(torch.autograd.Function):
    """loss = mean(log Σ_j exp(o_j − m) − (o_y − m)), m = max_j o_j; d loss / d o_j = (softmax(o)_j − [j = y]) / N.

    The gradient is written in place over the exponentials the forward saved, so the graph can
    be run backward once (a second ``backward(retain_graph=True)`` raises PyTorch's "modified
    by an inplace operation" error rather than returning a wrong gradient).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.unsqueeze(-1)
        maxes = logits.amax(dim=-1, keepdim=True)
        exps = (logits - maxes).exp_()  # one (N × vocab) tensor, exponentiated in place
        sums = exps.sum(dim=-1, keepdim=True)
        ctx.save_for_backward(exps, sums, targets)
        return (sums.log() - (logits.gather(-1, targets) - maxes)).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        exps, sums, targets = ctx.saved_tensors
        scale = grad / targets.numel()
        grad_logits = exps.mul_(scale / sums)  # softmax(o) · scale, in place: backward runs once
        grad_logits.scatter_add_(-1, targets, (-scale).expand(targets.shape))
        return grad_logits, None
