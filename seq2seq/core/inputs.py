"""What users hand the engine, checked once, where it enters: token ids, labels, masks.

The model's entry points (``model(...)``, ``encode``, ``start_decoding``, ``decode_step``), and through them
``generate`` and the command line, pass every array a user gives through these functions exactly once. Everything
deeper trusts what they checked: an embedding looks rows up without looking at the ids again, the loss reads
labels that are already known to lie in the vocabulary (or to be ``IGNORE_INDEX``).
"""
import numpy as np

from .errors import InputError

IGNORE_INDEX = -100  # a label the loss skips (torch's and transformers' convention); also padded label positions


def is_int(value):
    """True for a Python or NumPy integer that is not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value):
    """True for a Python or NumPy int or float that is not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def as_int_array(x, xp, *, name):
    """Lists and arrays of ids -> an int64 array of the model's backend, 2-D ``[batch, seq]``, or InputError.

    An int64 array of that backend comes back as it is (no copy): converting is free for arrays already converted.
    """
    array = xp.asarray(x)
    if array.ndim != 2:
        raise InputError(f"{name} must be 2-D [batch, seq], got shape {tuple(array.shape)}")
    if array.size == 0:
        raise InputError(f"{name} is empty: shape {tuple(array.shape)}")
    if array.dtype.kind not in "iub":
        raise InputError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(xp.int64, copy=False)


def check_vocabulary(ids, vocab_size, *, name, ignore=None):
    """Raise InputError naming ``name`` and its first id outside ``[0, vocab_size)`` (``ignore`` is allowed too)."""
    bad = (ids < 0) | (ids >= vocab_size)
    if ignore is not None:
        bad &= ids != ignore
    if bool(bad.any()):
        hint = f" (use {ignore} to ignore a position)" if ignore is not None else ""
        raise InputError(f"{name} holds id {int(ids[bad][0])}, outside the vocabulary [0, {vocab_size}){hint}")


def token_ids(x, xp, *, vocab_size, name, ignore=None):
    """Token ids as the model reads them: ``as_int_array``, then every id inside ``[0, vocab_size)`` (or ``ignore``)."""
    ids = as_int_array(x, xp, name=name)
    check_vocabulary(ids, vocab_size, name=name, ignore=ignore)
    return ids


def as_mask(mask, ids, xp, *, name):
    """An attention mask ``[B, T]`` of 1 (token) / 0 (padding) as an array of the backend, shaped like ``ids``;
    None stays None."""
    if mask is None:
        return None
    mask = xp.asarray(mask)
    check_mask(mask, ids, name=name)
    return mask


def check_mask(mask, ids, *, name):
    """Raise InputError unless ``mask`` is None or has exactly the shape of ``ids``."""
    if mask is not None and tuple(mask.shape) != tuple(ids.shape):
        raise InputError(f"{name} has shape {tuple(mask.shape)} but the ids it masks have shape {tuple(ids.shape)}")


def check_batch_size(ids, source_ids, *, name):
    """Raise InputError unless ``ids`` has as many rows as the sources ``source_ids`` (``input_ids``)."""
    if ids.shape[0] != source_ids.shape[0]:
        raise InputError(f"{name} has batch size {ids.shape[0]} but input_ids has {source_ids.shape[0]}")


def check_labels_shape(labels, decoder_ids):
    """Raise InputError unless there is one label per decoder input position."""
    if tuple(labels.shape) != tuple(decoder_ids.shape):
        raise InputError(f"labels has shape {tuple(labels.shape)} but decoder_input_ids has "
                         f"{tuple(decoder_ids.shape)}")
