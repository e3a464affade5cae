"""AdamW step speed: lmcli's from-scratch AdamW vs torch.optim.AdamW on the TinyStories model's parameters.

Only ``optimizer.step()`` is timed (gradients are fixed random tensors), over the parameters of
the CS336 TinyStories model (or another ``--config``), with decay groups as in the config. The
comparators are torch's three implementations: the per-parameter loop (``foreach=False``),
the multi-tensor one (``foreach=True``, torch's default on GPUs) and, where available,
``fused=True``; and lmcli's AdamW with ``compile_step`` (what a compiled run uses: the same
formula through torch.compile, inductor). Steps are interleaved so machine load hits every side alike; medians reported
with the ratio lmcli / torch.

    python benchmarks/bench_adamw.py [--config tinystories] [--device cpu] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lmcli.model import TransformerLM
from lmcli.training import AdamW, load_config
from lmcli.training.device import pick_device
from lmcli.training.optim import decay_groups

LR, BETAS, EPS, WEIGHT_DECAY = 1e-3, (0.9, 0.95), 1e-8, 0.1


def make_optimizers(config_name: str, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    config = load_config(config_name)
    no_decay = list(config.optimizer.no_decay)
    variants = {
        "lmcli AdamW": lambda groups: AdamW(groups, lr=LR, betas=BETAS, eps=EPS),
        "lmcli AdamW (compiled)": lambda groups: compiled(AdamW(groups, lr=LR, betas=BETAS, eps=EPS)),
        "torch AdamW (for-loop)": lambda groups: torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, foreach=False),
        "torch AdamW (foreach)": lambda groups: torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, foreach=True),
        "torch AdamW (fused)": lambda groups: torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, fused=True),
    }
    optimizers = {}
    for name, build in variants.items():
        torch.manual_seed(0)
        model = TransformerLM.from_config(config.model, device=device, dtype=torch.float32)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        try:
            optimizers[name] = build(decay_groups(model, WEIGHT_DECAY, no_decay))
            for _ in range(2):  # warm-up: state allocation, compilation (the first step then the next step counts)
                optimizers[name].step()
        except RuntimeError as e:  # fused is not implemented for every device
            print(f"skipping {name}: {str(e).splitlines()[0]}")
            optimizers.pop(name, None)
    return optimizers


def compiled(optimizer: AdamW) -> AdamW:
    optimizer.compile_step({"dynamic": False})
    return optimizer


def time_step(optimizer: torch.optim.Optimizer, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tinystories")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    device = pick_device(args.device)
    optimizers = make_optimizers(args.config, device)
    params = sum(p.numel() for g in next(iter(optimizers.values())).param_groups for p in g["params"])
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for i in range(args.repeats):
        order = list(optimizers) if i % 2 == 0 else list(reversed(optimizers))
        for name in order:
            times[name].append(time_step(optimizers[name], device))
    ours = statistics.median(times["lmcli AdamW"])
    print(f"AdamW step over {params:,} parameters ({args.config}) on {device}, median of {args.repeats}")
    print(f"{'optimizer':<26}{'ms/step':>10}{'lmcli / this':>14}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<26}{median * 1e3:>10.2f}{ours / median:>14.2f}")


if __name__ == "__main__":
    main()
