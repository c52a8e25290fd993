"""What users hand the engine, checked where it enters: token ids, masks.

Everything deeper trusts what these functions have checked.
"""
from .errors import InputError


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
