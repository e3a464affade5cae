"""lmcli: build and train small Transformer language models from scratch.

The stages of the pipeline live in their own packages: ``lmcli.tokenizer`` (byte-level BPE),
``lmcli.model`` (the Transformer LM), ``lmcli.training`` (loss, AdamW, data, checkpoints, loop),
``lmcli.generate`` (decoding). ``lmcli.cli`` is the command-line front end over them.
"""

__version__ = "0.1.0"
