"""``lmcli generate`` around the generation API of ``lmcli.generate``: finding the checkpoint and its
tokenizer (command), and turning streamed token ids into text (text_stream)."""
