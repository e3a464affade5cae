"""Cost accounting for a Transformer LM: parameters, matmul FLOPs, training memory and time.

Everything is computed from a ``ModelConfig`` alone (no torch), with formulas that the tests check
against the real model: ``count_params`` against the parameters of a built ``TransformerLM`` and
``forward_flops`` against ``torch.utils.flop_counter.FlopCounterMode`` on a forward pass.
"""

from lmcli.accounting.costs import adamw_flops, count_params, forward_flops, param_counts
from lmcli.accounting.hardware import PEAK_FLOPS, training_time
from lmcli.accounting.memory import (
    activation_elements,
    inference_memory,
    kv_cache_memory,
    max_batch_size,
    training_memory,
)

__all__ = [
    "PEAK_FLOPS",
    "activation_elements",
    "adamw_flops",
    "count_params",
    "forward_flops",
    "inference_memory",
    "kv_cache_memory",
    "max_batch_size",
    "param_counts",
    "training_memory",
    "training_time",
]
