"""Fast versions of the model's and the loss's heaviest steps, each equal to a plain one.

The plain code (``lmcli.model.attention``, ``lmcli.model.loss``) lets autograd differentiate
every elementwise step, which keeps each intermediate (N × keys or N × vocab) tensor alive and
runs a backward kernel per step. Here each step is one ``torch.autograd.Function`` whose
backward is written out by hand, working in place where it can. ``model.kernels = "fast"``
(the default) uses them; ``"reference"`` runs the plain code. The tests check that both give
the same values and gradients, on random inputs and through whole models.

- ``attention`` equals ``attention.scaled_dot_product_attention``: the (queries × keys) score
  matrix is built once, masked and normalised in place; the backward uses the FlashAttention
  identity rowsum(dP ⊙ P) = rowsum(dO ⊙ O), so the softmax's backward needs no second pass
  over the scores. Above ``KEY_BLOCK`` keys it is ``TiledAttention``, FlashAttention-2's online
  softmax over blocks of keys: no (queries × keys) matrix is kept, the backward recomputes
  each block's probabilities from the saved log-sum-exp, and causal blocks above the diagonal
  are skipped.
- ``rotate`` equals ``layers.rotate_pairs`` (RoPE): a rotation is orthogonal, so its
  gradient is the output's gradient rotated back, one pass instead of the backward of every
  multiply, add and stack.
- ``rms_norm`` equals ``layers.RMSNorm``: with r = 1/sqrt(mean(x²) + ε) and y = x·r·g, the input's
  gradient is r·(ĝ − x̂·mean(ĝ ⊙ x̂)), where x̂ = x·r and ĝ = dy ⊙ g: one expression instead of
  the backward of every square, mean, add, rsqrt and multiply (``FusedRMSNorm`` is the layer;
  the model's block norms and QK-norm use it).
- ``project_qkv`` equals three separate projections: one matmul against the stacked weights
  (one GPU kernel instead of three; the parameters stay separate, for the CS336 state dict).
- ``cross_entropy`` equals ``loss.cross_entropy``'s plain formula: the gradient
  (softmax(o) − onehot(y)) / N is computed in the forward, in place over its exponentials.
- ``linear_cross_entropy`` equals ``loss.cross_entropy(x @ Wᵀ, y)``: the output head and the
  loss fused, a chunk of rows at a time, so the (positions × vocab) logits never exist whole
  (at V = 50,304 and 16 × 1,024 positions they would be 3.3 GB in float32).
"""

from __future__ import annotations

import torch

from lmcli.model.layers import RMSNorm, rotate_pairs

# ---------------------------------------------------------------- attention


KEY_BLOCK = 256  # keys per tile of TiledAttention; longer contexts never hold a (queries × keys) matrix


def attention(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(Q Kᵀ / √d_k) V (mask True = attend), as ``scaled_dot_product_attention`` computes it.
    With gradients and more than KEY_BLOCK keys, ``mask`` must be ``attention.causal_mask`` (the one
    mask the model makes): the tiled kernel applies it block by block instead of reading it."""
    Q = Q * Q.shape[-1] ** -0.5  # scale Q (…×d_k), cheaper than the scores (…×keys)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (Q, K, V)):
        if K.shape[-2] > KEY_BLOCK:
            return TiledAttention.apply(Q, K, V, mask is not None)
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


class TiledAttention(torch.autograd.Function):
    """CausalAttention's result and gradients with memory O(queries × KEY_BLOCK) instead of
    O(queries × keys): FlashAttention-2's algorithm, with PyTorch tensor operations as the tiles.

    Forward: the keys go a block at a time; each query row keeps a running maximum m, a running
    sum l of exp(s − m) and an unnormalised output O, rescaled by exp(m_old − m_new) whenever a
    block raises the maximum ("online softmax"). At the end O /= l, and only the log-sum-exp
    L = m + log l of each row is saved, not P. Backward: each block's P = exp(S − L) is
    recomputed from Q, K and L, and the gradients follow as in CausalAttention, with
    D = rowsum(dO ⊙ O). Causal: query i (of the last ``queries`` positions) sees key j when
    j ≤ i + keys − queries, so a key block is only multiplied with the rows that see some of it.
    """

    @staticmethod
    def forward(ctx, Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, causal: bool) -> torch.Tensor:
        exact = torch.promote_types(Q.dtype, torch.float32)
        rows = Q.shape[:-1]
        m = torch.full(rows, float("-inf"), dtype=exact, device=Q.device)
        l = torch.zeros(rows, dtype=exact, device=Q.device)
        O = torch.zeros(*rows, V.shape[-1], dtype=exact, device=Q.device)
        for first, S, r in _score_tiles(Q, K, causal):
            m_new = torch.maximum(m[..., r], S.amax(dim=-1))
            P = S.sub_(m_new.unsqueeze(-1)).exp_()
            rescale = (m[..., r] - m_new).exp_()
            l[..., r] = l[..., r] * rescale + P.sum(dim=-1)
            O[..., r, :] = O[..., r, :] * rescale.unsqueeze(-1) + P.to(V.dtype) @ V[..., first : first + KEY_BLOCK, :]
            m[..., r] = m_new
        O = (O / l.unsqueeze(-1)).to(V.dtype)
        ctx.causal = causal
        ctx.save_for_backward(Q, K, V, O, m + l.log())
        return O

    @staticmethod
    def backward(ctx, dO: torch.Tensor):
        Q, K, V, O, L = ctx.saved_tensors
        dO = dO.to(O.dtype)
        D = (dO * O).sum(dim=-1, dtype=L.dtype)
        dQ = torch.zeros(Q.shape, dtype=L.dtype, device=Q.device)
        dK, dV = torch.empty_like(K), torch.empty_like(V)
        for first, S, r in _score_tiles(Q, K, ctx.causal):
            keys = slice(first, first + KEY_BLOCK)
            P = S.sub_(L[..., r].unsqueeze(-1)).exp_()
            dV[..., keys, :] = P.to(V.dtype).transpose(-2, -1) @ dO[..., r, :]
            dS = (dO[..., r, :] @ V[..., keys, :].transpose(-2, -1)).to(L.dtype).sub_(D[..., r].unsqueeze(-1)).mul_(P)
            dS = dS.to(Q.dtype)
            dQ[..., r, :] += dS @ K[..., keys, :]
            dK[..., keys, :] = dS.transpose(-2, -1) @ Q[..., r, :]
        return dQ.to(Q.dtype), dK, dV, None


def _score_tiles(Q: torch.Tensor, K: torch.Tensor, causal: bool):
    """For each block of KEY_BLOCK keys: (its first key, the float32 scores of the query rows that
    see it, masked, and those rows as a slice)."""
    queries, keys = Q.shape[-2], K.shape[-2]
    offset = keys - queries  # query i sits at position i + offset
    exact = torch.promote_types(Q.dtype, torch.float32)
    for first in range(0, keys, KEY_BLOCK):
        r = slice(max(0, first - offset) if causal else 0, queries)
        S = (Q[..., r, :] @ K[..., first : first + KEY_BLOCK, :].transpose(-2, -1)).to(exact)
        if causal and first + S.shape[-1] - 1 > r.start + offset:  # the block reaches past some row's last key
            row = torch.arange(r.start, queries, device=Q.device).unsqueeze(-1) + offset
            S.masked_fill_(torch.arange(first, first + S.shape[-1], device=Q.device) > row, float("-inf"))
        yield first, S, r


def project_qkv(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor):
    """(x W_qᵀ, x W_kᵀ, x W_vᵀ) in one matmul against the stacked weights."""
    return (x @ torch.cat((w_q, w_k, w_v)).T).split([w_q.shape[0], w_k.shape[0], w_v.shape[0]], dim=-1)


# ---------------------------------------------------------------- RMSNorm


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``RMSNorm``'s x / sqrt(mean(x²) + eps) · weight (in at least float32, returned in x's dtype), one-pass backward."""
    return RMSNormFunction.apply(x, weight, eps)


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        wide = x.to(torch.promote_types(x.dtype, torch.float32))
        r = torch.rsqrt(wide.square().mean(dim=-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, r)
        return (wide * r * weight).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, r = ctx.saved_tensors
        normalized, grad = x.to(r.dtype) * r, grad.to(r.dtype)
        scaled = grad * weight
        grad_x = r * (scaled - normalized * (scaled * normalized).mean(dim=-1, keepdim=True))
        grad_weight = (grad * normalized).flatten(0, -2).sum(dim=0)
        return grad_x.to(x.dtype), grad_weight.to(weight.dtype), None


class FusedRMSNorm(RMSNorm):
    """``RMSNorm`` (the same weight and values) computed by ``rms_norm``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def rms_norm_layer(kernels: str) -> type[RMSNorm]:
    """The RMSNorm a model of ``kernels`` builds: the plain layer for "reference", else the fused one."""
    return RMSNorm if kernels == "reference" else FusedRMSNorm


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

IGNORE = -1  # a target that counts for nothing (padding rows)
CHUNK_LOGITS = 1 << 24  # logits linear_cross_entropy holds at once (64 MB in float32)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` [..., vocab] against ``targets`` [...] (``IGNORE`` left out), in float32."""
    return CrossEntropy.apply(logits.float(), targets)


def row_weights(targets: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """1/N for each of the N counted targets, 0 for the ignored ones (no host sync: N stays a tensor)."""
    counted = (targets != IGNORE).to(dtype)
    return counted / counted.sum()


def weighted_loss_and_gradient(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, gradient: bool, z_loss: float = 0.0
):
    """Σ_i weights_i (L_i − o_iy + z_loss · L_i²), L_i = log Σ_j exp o_ij, for float32 ``logits`` (rows × vocab),
    its z-loss part Σ_i weights_i · z_loss · L_i² (for reporting), and, if ``gradient``, its gradient
    weights_i ((1 + 2 z_loss L_i) softmax(o_i) − onehot(y_i)) (else None)."""
    targets = targets.clamp(min=0).unsqueeze(-1)  # an ignored row's target is any valid id: its weight is 0
    maxes = logits.amax(dim=-1, keepdim=True)
    exps = (logits - maxes).exp_()  # the one (rows × vocab) tensor made here, exponentiated in place
    sums = exps.sum(dim=-1, keepdim=True)
    log_z = sums.log() + maxes
    z_term = (z_loss * log_z.square().squeeze(-1) * weights).sum()
    loss = ((log_z - logits.gather(-1, targets)).squeeze(-1) * weights).sum() + z_term
    if not gradient:
        return loss, z_term, None
    weights = weights.unsqueeze(-1)
    scale = weights / sums if not z_loss else weights * (1 + 2 * z_loss * log_z) / sums
    return loss, z_term, exps.mul_(scale).scatter_add_(-1, targets, -weights)


class CrossEntropy(torch.autograd.Function):
    """loss = Σ_i w_i (log Σ_j exp(o_ij − m_i) − (o_iy − m_i)), m_i = max_j o_ij, w_i = 1/N (0 for ignored rows);
    d loss / d o_ij = w_i (softmax(o_i)_j − [j = y_i]).

    The loss is the graph's last step, so the forward already writes the gradient, over the
    exponentials it computed, and the backward only scales it: no second pass over the logits.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        rows, targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        loss, _, grad = weighted_loss_and_gradient(rows, targets, row_weights(targets, rows.dtype), ctx.needs_input_grad[0])
        if grad is not None:
            ctx.save_for_backward(grad.view(logits.shape))
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (grad_logits,) = ctx.saved_tensors
        return grad_logits * grad, None


def linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab: int | None = None, z_loss: float = 0.0,
    softcap: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cross_entropy(x @ weight.T, targets)`` plus ``z_loss`` times the mean squared log-normalizer, and
    that z-loss term alone (no gradient: for reporting), computing the logits ``CHUNK_LOGITS`` at a
    time; with ``vocab``, the logits past the first ``vocab`` (padding rows of ``weight``) are left
    out; with ``softcap`` c, of the logits c·tanh(o/c)."""
    return LinearCrossEntropy.apply(x, weight, targets, vocab, z_loss, softcap)


class LinearCrossEntropy(torch.autograd.Function):
    """The output head and the loss in one: logits o = x Wᵀ, loss = CrossEntropy(o, y), without ever
    holding all (rows × vocab) logits. The rows go a chunk at a time; for each, the forward computes
    the chunk's logits, its loss and its logit gradient G = w (softmax(o) − onehot(y)), and at once
    the gradients they give, dx = G W and dW += Gᵀ x; the backward scales those two.

    The matrix products run in the autocast dtype when autocast is on (bf16 on GPUs), as the
    unfused head would; the softmax, and the sum of dW over chunks, in float32.
    """

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab: int | None, z_loss: float, softcap: float
    ) -> torch.Tensor:
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        exact = torch.promote_types(dtype, torch.float32)  # softmax and sums: float32 at least
        rows, targets = x.reshape(-1, x.shape[-1]), targets.reshape(-1)
        weights, w = row_weights(targets, exact), weight.to(dtype)
        gradient = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_x = torch.empty_like(rows) if gradient else None
        grad_w = torch.zeros(weight.shape, dtype=exact, device=weight.device) if gradient else None
        loss, z_term = torch.zeros((), dtype=exact, device=x.device), torch.zeros((), dtype=exact, device=x.device)
        chunk = max(1, CHUNK_LOGITS // weight.shape[0])
        for start in range(0, rows.shape[0], chunk):
            part = slice(start, start + chunk)
            inputs = rows[part].to(dtype)
            logits = (inputs @ w.T).to(exact)  # the whole padded table: aligned shapes
            capped = logits.div_(softcap).tanh_() if softcap else None  # in place: one pass, no temporaries
            if softcap:
                logits = capped * softcap
            if vocab is not None and vocab < logits.shape[-1]:
                logits[:, vocab:] = float("-inf")  # padding: probability 0, gradient 0
            part_loss, part_z, grad = weighted_loss_and_gradient(logits, targets[part], weights[part], gradient, z_loss)
            loss += part_loss
            z_term += part_z
            if gradient:
                if softcap:  # d(c·tanh(o/c))/do = 1 − tanh², made in place over tanh
                    grad.mul_(capped.square_().neg_().add_(1))
                grad = grad.to(dtype)
                grad_x[part] = grad @ w
                if grad_w.dtype == grad.dtype:
                    grad_w.addmm_(grad.T, inputs)  # summed inside the matmul: no (vocab × d) temporary
                else:
                    grad_w += grad.T @ inputs  # a bf16 product, summed in float32
        if gradient:
            ctx.save_for_backward(grad_x.view(x.shape), grad_w.to(weight.dtype))
        ctx.mark_non_differentiable(z_term)
        return loss, z_term

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _z_term_grad: torch.Tensor):
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad, grad_w * grad, None, None, None, None
