"""Text generation: choosing each next token (sampling), the decoding loop with its KV cache
(decoding), turning streamed ids into text (text_stream) and the completions it builds
(completion). ``lmcli.generate`` re-exports the CS336 interface."""
