"""Models that leave lmcli and models that come in: Hugging Face's Llama format, both ways.

lmcli's model is a Llama (pre-norm RMSNorm, RoPE, SwiGLU, no biases), so a checkpoint maps
exactly onto ``LlamaForCausalLM``: ``llama_config`` translates the config, ``llama_weights``
renames the state dict (and reorders the q/k rows of each head for the other RoPE pairing),
``hf_tokenizer`` writes and reads ``tokenizer.json``, ``safetensors_files`` reads and writes
the weights, and ``export`` / ``import_hf`` put them together as directories.
"""
