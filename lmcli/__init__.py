"""lmcli: build and train small Transformer language models from scratch.

The stages of the pipeline live in their own packages, stacked so that each imports only the
ones below it: ``lmcli.tokenizer`` (byte-level BPE) and ``lmcli.data`` (corpora, token files),
``lmcli.model`` (the Transformer LM), ``lmcli.accounting`` (its costs), ``lmcli.training`` and
``lmcli.generation`` (``lmcli.generate`` is its CS336 name), ``lmcli.experiments`` (runs,
curves, sweeps, evaluation) and ``lmcli.interop`` (Hugging Face and llama.cpp formats).
``lmcli.commands`` holds the body of every subcommand, ``lmcli.ui`` what they show, and
``lmcli.cli`` only parses the command line. The README's Development section has a map of every
module.
"""

__version__ = "0.1.0"
