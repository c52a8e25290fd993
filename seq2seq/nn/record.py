"""What a run of the network can report besides its result: attention probabilities and hidden states.

transformers' ``output_attentions`` and ``output_hidden_states`` are flags passed down through every layer's
signature there. Here the layers report to one object instead, the ``Records`` their shared ``RunState`` holds
(``state.records``; STYLE.md: "For debugging, add a hook list, not arguments"):

    Records(attentions=True, hidden_states=True)
        .attentions        self-attention probabilities, one [B, nh, T, S] array per layer, in order
        .cross_attentions  cross-attention probabilities, one [B, nh, T, S] per decoder layer
        .hidden_states     what entered each layer (the embeddings' output first), then the stack's last hidden
                           state (GPT-2's after its final ln_f, as transformers): num_layers + 1 arrays [B, T, C]

Each list is None when it was not asked for; ``NOTHING`` (all None) is what ``state.records`` holds outside a
recorded call, so that recording costs a comparison with None when off. The model sets up one ``Records`` for its
encoder and one for its decoder (``Recording``), and points ``state.records`` at the right one while each runs.

The recorded values are plain arrays of the model's backend, outside the autograd graph. The attention
probabilities are those that multiplied the values: after the mask and, in training, after dropout (zeros where
dropped, the rest scaled by 1 / (1 - p)), as transformers' eager attention returns them.
"""
import contextlib
import dataclasses

import numpy as np

from ..core.errors import ConfigError, InputError


class Records:
    """The lists one stack (encoder or decoder) appends to while it runs; None where nothing was asked for."""

    def __init__(self, *, attentions=False, hidden_states=False):
        self.attentions = [] if attentions else None
        self.cross_attentions = [] if attentions else None
        self.hidden_states = [] if hidden_states else None

    def hidden_state(self, h):
        """Record ``h`` (a Tensor ``[B, T, C]``) when hidden states were asked for."""
        if self.hidden_states is not None:
            self.hidden_states.append(h.data)

    def probabilities(self, *, cross):
        """The list an attention block appends its probabilities to (cross-attention's or self-attention's), or
        None: what ``nn.attention.Attention`` takes as ``probabilities_to``."""
        return self.cross_attentions if cross else self.attentions


NOTHING = Records()  # records nothing: what the layers report to outside a recorded call


@dataclasses.dataclass
class Recording:
    """What one recorded call (a forward pass, or all the steps of a ``generate``) collects, encoder and decoder
    apart."""

    encoder: Records = NOTHING
    decoder: Records = NOTHING


NOT_RECORDING = Recording()


def as_tuple(records):
    """A list of records as the tuple transformers returns (None stays None)."""
    return None if records is None else tuple(records)


def records_for(config, output_attentions, output_hidden_states):
    """The Records of one stack: each argument when given (True or False), else the stack's config field of that
    name (False when absent), as transformers 5 resolves them."""
    flags = {}
    for name, value in (("output_attentions", output_attentions), ("output_hidden_states", output_hidden_states)):
        if value is None:
            value = getattr(config, name, False)
            if not isinstance(value, bool):
                raise ConfigError(f"{type(config).__name__}.{name} must be true or false, got {value!r}")
        elif not isinstance(value, (bool, np.bool_)):
            raise InputError(f"{name} must be True, False or None, got {value!r}")
        flags[name] = bool(value)
    return Records(attentions=flags["output_attentions"], hidden_states=flags["output_hidden_states"])


@contextlib.contextmanager
def reporting(state, records):
    """Within the block the layers sharing ``state`` (a RunState) report to ``records``."""
    previous, state.records = state.records, records
    try:
        yield
    finally:
        state.records = previous
