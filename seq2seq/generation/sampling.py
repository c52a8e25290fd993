"""Choosing the next token of each row from its processed scores: the argmax (greedy decoding) or a draw from
their softmax with an explicit ``numpy.random.Generator`` (sampling). Beam search chooses its own way
(beam_search.py)."""
import numpy as np

from ..core.backend import get_array_module, to_numpy
from ..core.errors import GenerationError


def sample_tokens(scores, rng):
    """One draw per row from ``softmax(scores)`` ``[N, V]``, on the host with ``rng``: token ids ``[N]`` (NumPy).

    Inverse CDF: with u uniform in [0, total mass), the drawn token is the first whose cumulative probability
    exceeds u. A token of probability 0 (score -inf) adds nothing to the cumulative sum, so it is never first.
    """
    scores = to_numpy(scores).astype(np.float64)
    top = scores.max(axis=-1, keepdims=True)
    if not np.all(np.isfinite(top)):
        raise GenerationError("cannot sample: every token of some row has probability 0 (all scores -inf) or a "
                              "score is NaN/inf")
    probs = np.exp(scores - top)  # [N, V], unnormalised: the scale cancels in u below
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random(scores.shape[0]) * cdf[:, -1]  # [N]
    tokens = (cdf <= u[:, None]).sum(axis=-1)
    # Why the clamp: u * total can round up to total itself; then take the last token that has probability.
    last = scores.shape[-1] - 1 - np.argmax(probs[:, ::-1] > 0, axis=-1)
    return np.minimum(tokens, last)


def choose_tokens(scores, *, do_sample, rng):
    """The next token of each row: argmax (the first maximum on ties, as torch) or a draw; ``[N]`` on scores' device."""
    xp = get_array_module(scores)
    if not do_sample:
        return xp.argmax(scores, axis=-1)
    return xp.asarray(sample_tokens(scores, rng))
