"""The sources of a generate call: encoded once, shared by each source's beams or samples, and read by the
processors that look at them (``encoder_repetition_penalty``, ``encoder_no_repeat_ngram_size``).

The encoder runs on ``input_ids`` unless generate is handed ``encoder_outputs``, an encoding computed before (to
reuse one encoding for several generate calls, as in transformers):

    memory = model.encode(ids, mask)                       # a Tensor [B, S, C]
    model.generate(encoder_outputs=memory, attention_mask=mask, num_beams=4)
    model.generate(encoder_outputs=memory, attention_mask=mask, do_sample=True)

``encoder_outputs`` may be what ``model.encode`` returns, an array ``[B, S, C]`` (NumPy or the model's backend), or
an object with a ``last_hidden_state`` attribute or key (transformers' ``BaseModelOutput``). The attention mask is
the sources' as always. Processors that read the source ids are skipped with a warning when there are none.
"""
from ..core.autograd import Tensor
from ..core.errors import GenerationError
from ..core.inputs import token_ids
from .kernel_path import fused_decoding


def encoder_hidden_states(model, encoder_outputs):
    """``encoder_outputs`` as an array of the model's backend ``[B, S, C_enc]``, or GenerationError (None stays
    None)."""
    if encoder_outputs is None:
        return None
    value = encoder_outputs
    if isinstance(value, dict):
        value = value.get("last_hidden_state", value)
    value = getattr(value, "last_hidden_state", value)
    if isinstance(value, Tensor):
        value = value.data
    xp = model.xp
    try:
        hidden = xp.asarray(value)
    except (TypeError, ValueError) as err:
        raise GenerationError(f"encoder_outputs must be the encoder's last hidden state [batch, seq, hidden] "
                              f"(model.encode's result or an array), got {type(encoder_outputs).__name__}: {err}")
    width = model.config.encoder.hidden_size
    if hidden.ndim != 3 or hidden.shape[-1] != width or 0 in hidden.shape or hidden.dtype.kind != "f":
        raise GenerationError(f"encoder_outputs must be the encoder's last hidden state, floats of shape [batch, "
                              f"seq, {width}], got dtype {hidden.dtype} and shape {tuple(hidden.shape)}")
    return hidden.astype(model.parameters()[0].data.dtype, copy=False)


def encoder_input_ids(model, input_ids, hidden, *, needed):
    """The source ids ``[B, S]`` as the processors read them: None when not ``needed`` or not given. Given with
    ``hidden`` (encoder_outputs), they must have its batch size."""
    if not needed or input_ids is None:
        return None
    ids = token_ids(input_ids, model.xp, vocab_size=model.config.encoder.vocab_size, name="input_ids")
    if hidden is not None and ids.shape[0] != hidden.shape[0]:
        raise GenerationError(f"input_ids has batch size {ids.shape[0]} but encoder_outputs has {hidden.shape[0]}")
    return ids


def encode_sources(model, input_ids, attention_mask, config, *, copies, hidden=None, kernel=None):
    """The sources encoded once (or ``hidden``, their encoding) in a DecoderCache of ``B * copies`` decoder rows:
    each source serving ``copies`` adjacent rows (row0, row0, row1, row1, ...), as transformers'
    ``_expand_inputs_for_generation`` orders them, its encoder side kept once (nn/cache.py). With ``kernel`` (a
    fused step, ``"cuda"`` or ``"cpu"``: kernel_path.choose) that step over as many rows instead, which also keeps
    one encoder side per source (on a GPU, the model's last one, refilled, when it fits).

    ``model.start_decoding`` converts and checks ``input_ids`` and ``attention_mask``: the one look they get.
    """
    given = {} if hidden is None else {"encoder_outputs": hidden}  # a model that encodes is all the rest needs
    cache = model.start_decoding(input_ids, attention_mask, capacity=config.max_length, **given)
    if kernel:
        return fused_decoding(kernel, model, cache, copies=copies, max_length=config.max_length)
    if copies > 1:
        xp = model.xp
        # [B] -> [B * copies] rows; the encoder side stays [B, ...] (DecoderCache.reorder: each source in place)
        cache.reorder(xp.repeat(xp.arange(cache.batch_size), copies))
    return cache
