"""Multi-head scaled dot-product attention and the masks that say who may attend to whom.

Masks are boolean *keep* arrays, True where a query may look at a key, shaped to broadcast against the scores
``[B, nh, T, S]``: a padding mask is ``[B, 1, 1, S]``, a causal mask ``[1, 1, T, S]``. They are combined with ``&``
and applied inside the fused softmax (``nn_ops.MaskedSoftmax``), which fills left-out scores with the dtype's
lowest finite value rather than -inf.

Dimension letters: B batch, T query length, S key length, C channels, nh heads, hs head size (C = nh * hs).
The projections that produce q, k and v differ between model families (BERT's separate query/key/value, GPT-2's
fused ``c_attn``), so they live with each model; what is common lives here.
"""
import math

from .errors import InputError
from .nn_ops import masked_softmax
from .ops import matmul, reshape, transpose


def padding_mask(attention_mask, *, name="attention_mask"):
    """``[B, S]`` of 1 (real token) / 0 (padding) -> keep ``[B, 1, 1, S]``."""
    if attention_mask.ndim != 2:
        raise InputError(f"{name} must be 2-D [batch, seq], got shape {tuple(attention_mask.shape)}")
    return (attention_mask != 0)[:, None, None, :]


def causal_mask(xp, query_length, key_length):
    """keep ``[1, 1, T, S]``: the query at position i (the last T of S positions) sees keys 0..i."""
    offset = key_length - query_length  # positions already in the KV cache
    rows = xp.arange(query_length)[:, None] + offset
    return (xp.arange(key_length)[None, :] <= rows)[None, None]


def combine_masks(*masks):
    """AND of the masks that are not None (None when all are)."""
    keep = None
    for mask in masks:
        if mask is not None:
            keep = mask if keep is None else keep & mask
    return keep


def split_heads(x, num_heads):
    """``[B, T, C] -> [B, nh, T, hs]``."""
    b, t, c = x.shape
    x = reshape(x, (b, t, num_heads, c // num_heads))  # [B, T, C] -> [B, T, nh, hs]
    return transpose(x, (0, 2, 1, 3))  # [B, T, nh, hs] -> [B, nh, T, hs]


def merge_heads(x):
    """``[B, nh, T, hs] -> [B, T, C]``."""
    b, nh, t, hs = x.shape
    x = transpose(x, (0, 2, 1, 3))  # [B, nh, T, hs] -> [B, T, nh, hs]
    return reshape(x, (b, t, nh * hs))  # [B, T, nh, hs] -> [B, T, C]


def scaled_dot_product_attention(q, k, v, keep, *, dropout=None):
    """softmax(q k^T / sqrt(hs), masked) v for q ``[B, nh, T, hs]``, k and v ``[B, nh, S, hs]``."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = matmul(q, transpose(k, (0, 1, 3, 2)))  # [B, nh, T, hs] @ [B, nh, hs, S] -> [B, nh, T, S]
    probs = masked_softmax(scores, keep, scale)
    if dropout is not None:
        probs = dropout(probs)  # dropout on the attention probabilities themselves, as BERT does
    return matmul(probs, v)  # [B, nh, T, S] @ [B, nh, S, hs] -> [B, nh, T, hs]


def check_mask(mask, ids, *, name):
    """Raise InputError unless ``mask`` is None or has exactly the shape of ``ids``."""
    if mask is not None and tuple(mask.shape) != tuple(ids.shape):
        raise InputError(f"{name} has shape {tuple(mask.shape)} but the ids it masks have shape {tuple(ids.shape)}")


def as_int_array(x, xp, *, name):
    """Lists and arrays of ids -> an integer array of the model's backend, 2-D, or InputError."""
    array = xp.asarray(x)
    if array.ndim != 2:
        raise InputError(f"{name} must be 2-D [batch, seq], got shape {tuple(array.shape)}")
    if array.size == 0:
        raise InputError(f"{name} is empty: shape {tuple(array.shape)}")
    if array.dtype.kind not in "iub":
        raise InputError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(xp.int64, copy=False)
