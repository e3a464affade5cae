"""Training time from FLOPs: steps × (3 · forward FLOPs · batch + AdamW FLOPs) / (MFU · peak FLOP/s).

Peak dense (no sparsity) tensor-core throughput from the vendors' datasheets, per GPU model:
bf16 (what bf16 autocast runs at) and TF32 (what float32 matmuls run at once TF32 is allowed, as
lmcli does on CUDA). The datasheets' larger numbers assume 2:4 sparsity and are halved here.
The same chip name covers cards of different peaks (an H100 SXM is 989 TFLOP/s bf16, an H100
PCIe 756, an H100 NVL 835), so the device name is matched against the table in order, the more
specific patterns first; a GPU not in the table gets no MFU unless its peak is given
(``--peak-flops``).
"""

from __future__ import annotations

import re

from lmcli.accounting.costs import adamw_flops, forward_flops
from lmcli.model.config import ModelConfig

# (pattern searched in torch.cuda.get_device_name, bf16 FLOP/s, TF32 FLOP/s), most specific first.
GPU_PEAKS: list[tuple[str, float, float]] = [
    (r"H100.*PCIe", 756e12, 378e12),
    (r"H100.*NVL", 835e12, 418e12),
    (r"H100", 989e12, 495e12),  # SXM5 (names such as "NVIDIA H100 80GB HBM3")
    (r"H200.*NVL", 835e12, 418e12),
    (r"H200", 989e12, 495e12),  # SXM, and GH200
    (r"A100", 312e12, 156e12),  # SXM4 and PCIe
    (r"L40S", 362e12, 183e12),
    (r"L40\b", 181e12, 90.5e12),
    (r"\bL4\b", 121e12, 60e12),
    (r"A10G", 70e12, 35e12),
    (r"\bA10\b", 125e12, 62.5e12),
    (r"RTX 4090", 165e12, 82.6e12),  # GeForce: bf16 with float32 accumulation
    (r"RTX 3090", 71e12, 35.6e12),
]

PEAK_FLOPS = {  # for ``lmcli accounting --hardware``
    "a100": {"bf16": 312e12, "fp32": 19.5e12},
    "h100": {"bf16": 989e12, "fp32": 67e12},
}


def gpu_peak_flops(device_name: str, bf16: bool) -> float | None:
    """Dense peak FLOP/s of the GPU of this name: bf16, or TF32 for float32 matmuls; None if unknown."""
    for pattern, bf16_peak, tf32_peak in GPU_PEAKS:
        if re.search(pattern, device_name):
            return bf16_peak if bf16 else tf32_peak
    return None


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
