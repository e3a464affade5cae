"""Training throughput: lmcli's from-scratch Transformer LM and AdamW vs the same model from PyTorch's layers.

One training step is timed whole: forward, cross-entropy, backward, global gradient-norm
clipping and an AdamW update. The two sides:

- lmcli: ``TransformerLM`` with the loss inside (``model(x, targets=y)``, as ``lmcli train``
  runs it), ``lmcli.training`` clip_grad_norm and AdamW; ``--kernels`` picks the model's kernel
  set (``fast``, from scratch, the default; ``torch``, PyTorch's fused attention and loss;
  ``reference``, the plain code);
- PyTorch: the same architecture (pre-norm, RoPE, SwiGLU, untied head) from ``nn.Embedding``,
  ``nn.Linear``, ``nn.RMSNorm``, ``F.scaled_dot_product_attention(is_causal=True)`` (flash /
  memory-efficient kernels), with ``F.cross_entropy``, ``torch.nn.utils.clip_grad_norm_`` and
  ``torch.optim.AdamW`` (its default implementation for the device).

Both start from the same weights (the PyTorch model loads lmcli's state dict, the parameter
names match) and must give the same loss on the first batch, so the comparison is of one
computation done two ways. Steps are interleaved (lmcli, PyTorch, PyTorch, lmcli, ...) after
warm-up, so a change in machine load hits both; the median of the repeats is reported, with
tokens/s, MFU (matmul FLOPs from ``lmcli.accounting``; needs a known GPU or ``--peak-flops``)
and the ratio lmcli / PyTorch. ``--profile`` prints where each side spends its time.

    python benchmarks/train_throughput.py                      # CPU, TinyStories shape, batch 8 x 256
    python benchmarks/train_throughput.py --device cuda --dtype bf16 --compile --config tinystories
    python benchmarks/train_throughput.py --device cuda --dtype bf16 --compile --kernels torch
    python benchmarks/train_throughput.py --device cuda --nproc 8 --config tinystories   # data parallel:
        hands over to bench_parallel.py (accumulation overhead and scaling over N processes)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from lmcli.accounting import forward_flops
from lmcli.model import ModelConfig, TransformerLM
from lmcli.training import AdamW, clip_grad_norm, load_config
from lmcli.training.device import known_peak_flops, pick_device

LR, BETAS, WEIGHT_DECAY, MAX_NORM = 1e-4, (0.9, 0.95), 0.1, 1.0


# ---- the comparator: the same architecture from PyTorch's own layers ----


class TorchRoPE(nn.Module):
    """RoPE as complex multiplication (the LLaMA reference code's formulation)."""

    def __init__(self, theta: float, d_k: int, max_seq_len: int):
        super().__init__()
        inv_freq = theta ** (-torch.arange(0, d_k, 2, dtype=torch.float64) / d_k)
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)
        self.register_buffer("rotation", torch.polar(torch.ones_like(angles), angles).to(torch.complex64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
        return torch.view_as_real(pairs * self.rotation[: x.shape[-2]]).flatten(-2).type_as(x)


class TorchAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.q_proj, self.k_proj, self.v_proj, self.output_proj = (
            nn.Linear(cfg.d_model, cfg.d_model, bias=False) for _ in range(4)
        )
        self.rope = TorchRoPE(cfg.rope_theta, cfg.head_dim, cfg.context_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (proj(x).unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(self.rope(q), self.rope(k), v, is_causal=True)
        return self.output_proj(out.transpose(1, 2).flatten(-2))


class TorchSwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.w2 = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.w3 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TorchBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.RMSNorm(cfg.d_model, eps=1e-5), nn.RMSNorm(cfg.d_model, eps=1e-5)
        self.attn, self.ffn = TorchAttention(cfg), TorchSwiGLU(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class TorchLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.token_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(TorchBlock(cfg) for _ in range(cfg.num_layers))
        self.ln_final = nn.RMSNorm(cfg.d_model, eps=1e-5)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.token_embeddings(ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.ln_final(x))


# ---- one training step, either side ----


class Trainer:
    """A model with its optimizer, loss and clipping: ``step(x, y)`` is one full training step."""

    def __init__(self, name: str, model: nn.Module, optimizer, loss_fn, clip_fn, compile_: bool, autocast):
        self.name, self.model, self.optimizer = name, model, optimizer
        self.loss_fn, self.clip_fn, self.autocast = loss_fn, clip_fn, autocast
        self.forward = torch.compile(model, dynamic=False) if compile_ else model

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``loss_fn(forward, x, y)``: the loss of the (compiled) model, as each side computes it."""
        with self.autocast():
            return self.loss_fn(self.forward, x, y)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        loss = self.loss(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.clip_fn(self.model.parameters(), MAX_NORM)
        self.optimizer.step()


def torch_loss(forward, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(forward(x).flatten(0, -2).float(), targets.flatten())


def lmcli_loss(forward, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return forward(x, targets=targets)  # the model computes its loss, inside the compiled graph


def build_trainers(cfg: ModelConfig, device: torch.device, dtype: str, compile_: bool) -> list[Trainer]:
    if (cfg.norm, cfg.position, cfg.ffn, cfg.tie_embeddings) != ("pre", "rope", "swiglu", False):
        sys.exit("the PyTorch comparator builds the base architecture only (pre-norm, RoPE, SwiGLU, untied head)")
    torch.manual_seed(0)
    ours = TransformerLM.from_config(cfg, device=device, dtype=torch.float32)
    theirs = TorchLM(cfg).to(device)
    theirs.load_state_dict(ours.state_dict())  # the same weights; strict, so every name must match

    def autocast():
        if dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    return [
        Trainer("lmcli", ours, AdamW(ours.parameters(), LR, BETAS, weight_decay=WEIGHT_DECAY), lmcli_loss,
                clip_grad_norm, compile_, autocast),
        Trainer("pytorch", theirs, torch.optim.AdamW(theirs.parameters(), LR, BETAS, weight_decay=WEIGHT_DECAY),
                torch_loss, torch.nn.utils.clip_grad_norm_, compile_, autocast),
    ]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_steps(trainer: Trainer, batches, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    for x, y in batches:
        trainer.step(x, y)
    synchronize(device)
    return time.perf_counter() - start


def profile(trainer: Trainer, batches, device: torch.device, rows: int = 15) -> None:
    """The operators that take the time in a few steps (torch.profiler), self time first."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        time_steps(trainer, batches, device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\n--- profile: {trainer.name} ---")
    print(prof.key_averages().table(sort_by=sort, row_limit=rows))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="TOML config (path or bundled name): model shape and training.batch_size "
                   "[default: the TinyStories base model, batch 8 x 256]")
    p.add_argument("--batch-size", type=int, help="override the batch size")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto [default: cpu]")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="fp32, or bf16 autocast [default: fp32]")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--kernels", choices=("fast", "torch", "reference"), help="lmcli's kernel set [default: the config's]")
    p.add_argument("--steps", type=int, default=2, help="timed steps per repeat [default: 2]")
    p.add_argument("--repeats", type=int, default=3, help="repeats per side; the median is reported [default: 3]")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per side first [default: 1]")
    p.add_argument("--peak-flops", type=float, help="device peak FLOP/s for MFU [default: known GPUs only]")
    p.add_argument("--profile", action="store_true", help="also print a torch.profiler table for each side")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--nproc", type=int, default=1, help="N > 1: measure data-parallel training instead (bench_parallel.py)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.nproc > 1:
        import bench_parallel  # the script beside this one (benchmarks/ is on sys.path when run as a script)

        forwarded = ["--device", args.device, "--nproc", str(args.nproc), "--dtype", args.dtype,
                     *(["--config", args.config] if args.config else []), *(["--batch-size", str(args.batch_size)] if args.batch_size else []),
                     *(["--compile"] if args.compile else []), *(["--json"] if args.json else [])]
        bench_parallel.main(forwarded)
        return None
    if args.config:
        config = load_config(args.config)
        cfg, batch_size = config.model, args.batch_size or config.training.batch_size
    else:
        cfg, batch_size = ModelConfig(), args.batch_size or 8
    if args.kernels:
        cfg = dataclasses.replace(cfg, kernels=args.kernels)
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    trainers = build_trainers(cfg, device, args.dtype, args.compile)

    generator = torch.Generator().manual_seed(1)
    batches = [
        tuple(t.to(device) for t in torch.randint(cfg.vocab_size, (2, batch_size, cfg.context_length), generator=generator))
        for _ in range(args.steps)
    ]
    with torch.no_grad():
        first_losses = [t.loss(*batches[0]).item() for t in trainers]
    peak_memory = {}
    for t in trainers:  # warm-up: allocator, kernel selection, compilation; and each side's peak memory on a GPU
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        time_steps(t, batches[: max(1, args.warmup)], device)
        peak_memory[t.name] = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None

    seconds: dict[str, list[float]] = {t.name: [] for t in trainers}
    for r in range(args.repeats):
        for t in trainers if r % 2 == 0 else trainers[::-1]:
            seconds[t.name].append(time_steps(t, batches, device))

    tokens_per_step = batch_size * cfg.context_length
    flops_per_token = 3 * forward_flops(cfg, cfg.context_length)["total"] / cfg.context_length
    peak = args.peak_flops or known_peak_flops(device, bf16=args.dtype == "bf16")
    results = {}
    for name, times in seconds.items():
        tokens_per_s = args.steps * tokens_per_step / statistics.median(times)
        results[name] = {
            "tokens_per_s": round(tokens_per_s, 1),
            "step_ms": round(1000 * statistics.median(times) / args.steps, 2),
            "mfu": tokens_per_s * flops_per_token / peak if peak else None,
            "peak_memory_bytes": peak_memory[name],
        }
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "dtype": args.dtype,
        "compile": args.compile,
        "kernels": cfg.kernels,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": {"vocab_size": cfg.vocab_size, "context_length": cfg.context_length, "d_model": cfg.d_model,
                  "num_layers": cfg.num_layers, "num_heads": cfg.num_heads, "d_ff": cfg.d_ff},
        "batch_size": batch_size,
        "parameters": sum(p.numel() for p in trainers[0].model.parameters()),
        "first_loss": dict(zip((t.name for t in trainers), first_losses)),
        **results,
        "ratio": round(results["lmcli"]["tokens_per_s"] / results["pytorch"]["tokens_per_s"], 3),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report, args)
    if args.profile:
        for t in trainers:
            profile(t, batches, device)
    return report


def print_report(report: dict, args: argparse.Namespace) -> None:
    m = report["model"]
    print(f"training step (forward, backward, clip, AdamW) on {report['device']}, {report['dtype']}"
          f"{', compiled' if report['compile'] else ''}, lmcli kernels {report['kernels']}, {report['threads']} threads, "
          f"torch {report['torch']}")
    print(f"model d_model={m['d_model']} layers={m['num_layers']} heads={m['num_heads']} d_ff={m['d_ff']} "
          f"vocab={m['vocab_size']} ({report['parameters']:,} parameters); batch {report['batch_size']} x "
          f"{m['context_length']}; median of {args.repeats} x {args.steps} steps")
    losses = report["first_loss"]
    print(f"same weights, first loss: lmcli {losses['lmcli']:.5f}, pytorch {losses['pytorch']:.5f}")
    print(f"{'':10}{'tokens/s':>12}{'ms/step':>10}{'MFU':>8}")
    for name in ("lmcli", "pytorch"):
        r = report[name]
        mfu = "-" if r["mfu"] is None else f"{r['mfu']:.1%}"
        print(f"{name:10}{r['tokens_per_s']:>12,.0f}{r['step_ms']:>10.1f}{mfu:>8}")
    print(f"ratio lmcli / pytorch: {report['ratio']:.2f}x")
    if not math.isclose(losses["lmcli"], losses["pytorch"], rel_tol=1e-3):
        print("warning: the two models disagree on the first loss; they do not compute the same thing")


if __name__ == "__main__":
    main()
