"""The exceptions seq2seq raises for bad input.

Every error a user can cause (a missing file, a corrupt checkpoint, a tensor of the wrong shape, an id outside the
vocabulary, an impossible generation argument) is raised as one of these, with a message that names the file,
tensor, argument or shape at fault. Each also derives from the built-in exception a Python programmer would try
first (``ValueError``, ``FileNotFoundError``), so ``except ValueError`` keeps working.
"""


class Seq2SeqError(Exception):
    """Base class of every error seq2seq raises on purpose."""


class CheckpointError(Seq2SeqError, ValueError):
    """A checkpoint file is corrupt, truncated, or holds a tensor of the wrong shape or dtype."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint directory or one of the files it must contain does not exist."""


class ConfigError(Seq2SeqError, ValueError):
    """A config.json is unreadable, has an unknown ``model_type``, or values that cannot work together."""


class InputError(Seq2SeqError, ValueError):
    """Model inputs are malformed: ids outside the vocabulary, mismatched mask shapes, sequences too long."""


class GenerationError(InputError):
    """``generate`` was asked for something impossible (e.g. ``num_beams < 1`` or ``temperature <= 0``)."""
