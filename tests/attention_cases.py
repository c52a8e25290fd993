"""Masks of every kind for attention tests (tests/nn/test_attention.py, tests/fast/test_fast_cpu_attention.py)."""
import numpy as np

from seq2seq.nn.attention import causal_mask, combine_masks, padding_mask


def make_keep(xp, kind, b, t, s):
    """A keep-mask of one kind for scores [b, nh, t, s] (None for "none")."""
    if kind == "none":
        return None
    if kind == "padding":
        mask = np.ones((b, s), np.int64)
        mask[-1, s // 2:] = 0
        return padding_mask(xp.asarray(mask))
    if kind == "causal":
        return causal_mask(xp, t, s)
    if kind == "causal+padding":
        mask = np.ones((b, s), np.int64)
        mask[0, -1] = 0
        return combine_masks(causal_mask(xp, t, s), padding_mask(xp.asarray(mask)))
    keep = np.ones((b, 1, t, s), bool)  # "fully-masked-row": a query that may see nothing
    keep[0, 0, t - 1, :] = False
    return xp.asarray(keep)


KINDS = ["none", "padding", "causal", "causal+padding", "fully-masked-row"]
