"""The network's parts: parameters from checkpoint views, the ops with hand-derived backward, attention, layers,
the KV cache."""
