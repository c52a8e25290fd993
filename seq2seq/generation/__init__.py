"""Decoding: logits processors, greedy and sampling loops, beam search, over a model's ``start_decoding`` and
``decode_step``."""
