"""Where and how the model runs: device choice, mixed precision, compilation, peak FLOP/s.

- ``auto`` picks CUDA, then Apple's MPS, then the CPU.
- CUDA: bf16 autocast (matmuls in bf16, weights, optimizer state and loss in float32), TF32
  for the float32 matmuls that remain, and ``torch.compile`` (inductor) by default.
- MPS: no TF32 switch (it is not supported there) and the ``aot_eager`` compile backend,
  the one that works reliably on MPS.
- CPU: float32; with ``compile = "auto"``, compiled (inductor) when the run is long enough to
  repay the compilation: on the 2-core EPYC the demo model trains 1.27x faster compiled
  (15,400 against 12,200 tokens/s), but its 500 steps took 205 s compiled against 200 s eager,
  the compilation of its graphs eating the gain; so ``auto`` compiles runs expected to take
  over CPU_COMPILE_WORTH_S eager (estimated from their FLOPs), where a C++ compiler and
  Python's headers exist and PyTorch's path has no spaces (inductor does not quote it).

``peak_flops`` is the dense throughput of known GPUs (bf16 under autocast, else TF32), the
denominator of MFU (model FLOPs utilisation); for other devices MFU is reported only when a
peak is configured (``--peak-flops``, ``training.peak_flops``).
"""

from __future__ import annotations

import contextlib
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

from lmcli.accounting.hardware import gpu_peak_flops
from lmcli.errors import LmcliError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    autocast: bool  # bf16 autocast on
    compile: bool
    peak_flops: float | None  # None: MFU is not reported

    def autocast_context(self) -> contextlib.AbstractContextManager:
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def compile_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model compiled for the fixed shapes it runs (training pads evaluation batches to them),
        so it compiles once with gradients and once without, and never recompiles."""
        return torch.compile(model, **self.compile_options()) if self.compile else model

    def compile_in_place(self, module: torch.nn.Module) -> None:
        """Compile ``module``'s forward without wrapping it (its parameter names stay): for FSDP's blocks."""
        if self.compile:
            module.compile(**self.compile_options())

    def compile_options(self) -> dict:
        return {"backend": "aot_eager" if self.device.type == "mps" else "inductor", "dynamic": False}

    def peak_memory_bytes(self) -> int | None:
        """The most memory PyTorch's allocator has held on a GPU so far (None on other devices)."""
        return torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else self.device.type
        flags = [f for f, on in (("bf16 autocast", self.autocast), ("torch.compile", self.compile)) if on]
        return name + (f" ({', '.join(flags)})" if flags else "")


def pick_device(requested: str) -> torch.device:
    """``auto`` -> the best available device; otherwise the named one, if it is available."""
    mps = getattr(torch.backends, "mps", None)
    available = {"cuda": torch.cuda.is_available(), "mps": bool(mps and mps.is_available()), "cpu": True}
    if requested == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available[d]))
    if requested not in available:
        raise LmcliError(f"unknown device {requested!r} (choose auto, cpu, cuda or mps)")
    if not available[requested]:
        raise LmcliError(f"device {requested} is not available on this machine (use --device auto or cpu)")
    return torch.device(requested)


TORCH_DIR = str(Path(torch.__file__).parent)
CPU_COMPILE_WORTH_S = 600  # eager seconds from which compiling a CPU run pays (the ~200 s demo broke even)
CPU_FLOPS_PER_THREAD = 3.5e10  # what eager training achieves per thread, for that estimate (2-core EPYC, demo: 7e10)


def setup_runtime(
    device: str, compile: str, autocast: str, peak_flops: float, local_rank: int = 0, training_flops: float = 0.0,
) -> Runtime:
    """Choose the device and its settings from the ``[system]`` config ("auto"/"on"/"off" switches);
    the process of ``local_rank`` on a machine with several GPUs takes ``cuda:local_rank``.
    ``training_flops`` (the whole run's) decides ``compile = "auto"`` on a CPU."""
    chosen = pick_device(device)
    on_cuda = chosen.type == "cuda"
    if on_cuda:
        if local_rank >= torch.cuda.device_count():
            raise LmcliError(f"LOCAL_RANK {local_rank} has no GPU: this machine has {torch.cuda.device_count()}")
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    use_autocast = on_cuda if autocast == "auto" else autocast == "on"
    if compile == "auto":
        use_compile = on_cuda or (chosen.type == "cpu" and cpu_compile_pays(training_flops))
    else:
        use_compile = compile == "on"
    if use_compile and chosen.type == "cpu" and " " in TORCH_DIR:
        raise LmcliError(f"torch.compile cannot build its C++ kernels here: PyTorch lies under a path with spaces ({TORCH_DIR}), "
                         "which its compiler command does not quote; set system.compile = \"off\" or install in a path without spaces")
    return Runtime(
        device=chosen,
        autocast=use_autocast,
        compile=use_compile,
        peak_flops=peak_flops or known_peak_flops(chosen, use_autocast),
    )


def cpu_compile_pays(training_flops: float) -> bool:
    """Whether a CPU run of this many FLOPs is long enough to repay compiling, and compiling can work here."""
    eager_seconds = training_flops / (CPU_FLOPS_PER_THREAD * torch.get_num_threads())
    compiler = any(shutil.which(c) for c in ("c++", "g++", "clang++"))
    headers = (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file()  # inductor's C++ includes them
    can_build = " " not in TORCH_DIR and compiler and headers
    return eager_seconds > CPU_COMPILE_WORTH_S and can_build


def known_peak_flops(device: torch.device, bf16: bool = True) -> float | None:
    """The GPU's dense peak for bf16 (autocast) or TF32 matmuls; None elsewhere or when unknown."""
    if device.type != "cuda":
        return None
    return gpu_peak_flops(torch.cuda.get_device_name(device), bf16)
