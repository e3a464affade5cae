"""Training time from FLOPs: steps × (3 · forward FLOPs · batch + AdamW FLOPs) / (MFU · peak FLOP/s).

Peak dense (no sparsity) throughput from the vendors' datasheets:
- NVIDIA A100 Tensor Core GPU datasheet: BF16 Tensor Core 312 TFLOP/s, FP32 19.5 TFLOP/s
  (TF32 Tensor Core 156).
- NVIDIA H100 Tensor Core GPU datasheet, SXM5: BF16 Tensor Core 989 TFLOP/s, FP32 67 TFLOP/s
  (TF32 Tensor Core 495). The datasheets' larger numbers (624, 1,979) assume 2:4 sparsity.
"""

from __future__ import annotations

from lmcli.accounting.costs import adamw_flops, forward_flops
from lmcli.model.config import ModelConfig

# Dense (no sparsity) bf16 tensor-core peak in FLOP/s, by a substring of the device name.
GPU_PEAK_BF16 = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,
    "T4": 65e12,
}

PEAK_FLOPS = {
    "a100": {"bf16": GPU_PEAK_BF16["A100"], "fp32": 19.5e12},
    "h100": {"bf16": GPU_PEAK_BF16["H100"], "fp32": 67e12},
}


def training_time(
    cfg: ModelConfig, seq_len: int, batch_size: int, steps: int, hardware: str, dtype: str, mfu: float
) -> dict[str, int | float]:
    """FLOPs and wall-clock seconds of ``steps`` AdamW steps at the given model FLOPs utilization."""
    forward = forward_flops(cfg, seq_len)["total"] * batch_size
    adamw = adamw_flops(cfg)
    step_flops = 3 * forward + adamw
    peak = PEAK_FLOPS[hardware][dtype]
    return {
        "forward_flops_per_step": forward,
        "backward_flops_per_step": 2 * forward,
        "adamw_flops_per_step": adamw,
        "flops_per_step": step_flops,
        "total_flops": step_flops * steps,
        "peak_flops_per_second": peak,
        "seconds": step_flops * steps / (mfu * peak),
    }
