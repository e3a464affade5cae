"""The CS336 name of the generation API: ``from lmcli.generate import generate``.

The code lives in ``lmcli.generation`` (decoding: the loop and its KV cache; sampling:
temperature and top-p).
"""

from lmcli.generation.decoding import generate, generate_batch
from lmcli.generation.sampling import Sampling, nucleus, sample_next

__all__ = ["Sampling", "generate", "generate_batch", "nucleus", "sample_next"]
