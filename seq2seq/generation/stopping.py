"""Stopping criteria beyond eos and max_length: ``max_time`` and ``stop_strings``, as transformers' own.

A criterion maps the decoder sequences ``[N, t]`` (start token included) to a bool ``[N]``: True for each row that
is done. ``generate`` treats a done row like one that produced eos (it is finished; later tokens are
``pad_token_id`` when an eos id is set, as transformers pads only then); beam search treats a candidate that is done
as one that ends with eos.

- ``MaxTime``: every row is done once ``max_time`` seconds have passed since generate started. Each step's tokens
  are kept, so the result is a shorter, well-formed output.
- ``StopStrings``: a row is done when its text ends with one of ``stop_strings``, or more exactly, when a stop
  string occurs in the text of its tokens with its last character inside the newest token (so "st" + "opped" stops
  at "stop", but a stop string some tokens back does not stop the row again). The text of a token is what the
  tokenizer decodes it to in the middle of a text: "##ing" is "ing", "the" is " the" (WordPiece), "Ġthe" the bytes
  of " the" (byte-level BPE, compared as bytes), as transformers' ``StopStringCriteria`` reads the vocabulary.
"""
import json
import time

from ..core.backend import get_array_module, to_numpy
from ..core.errors import GenerationError
from ..core.inputs import is_number

STATIC_PREFIX = "abcdef"  # decoded in front of each token, then cut off: a token's text in mid-sentence


class MaxTime:
    """Every row is done once ``max_time`` seconds have passed since ``start`` (``time.time()``)."""

    def __init__(self, max_time, *, start=None):
        if not is_number(max_time) or not max_time >= 0:
            raise GenerationError(f"`max_time` has to be a number of seconds >= 0, but is {max_time!r}")
        self.max_time = float(max_time)
        self.start = time.time() if start is None else start

    def __call__(self, sequences):
        xp = get_array_module(sequences)
        return xp.full(sequences.shape[0], time.time() - self.start > self.max_time, dtype=bool)


class StopStrings:
    """A row is done when one of ``stop_strings`` ends inside its newest token (see the module docstring).

    ``tokenizer``: ``seq2seq.Tokenizer`` or a transformers fast tokenizer (anything with ``backend_tokenizer``, a
    ``tokenizers.Tokenizer``).
    """

    def __init__(self, stop_strings, tokenizer):
        if isinstance(stop_strings, str):
            stop_strings = [stop_strings]
        if (not isinstance(stop_strings, (list, tuple)) or not stop_strings
                or not all(isinstance(s, str) and s for s in stop_strings)):
            raise GenerationError(f"`stop_strings` has to be a string or a non-empty list of non-empty strings, "
                                  f"but is {stop_strings!r}")
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise GenerationError("stop_strings need the model's tokenizer: pass generate(..., stop_strings=[...], "
                                  "tokenizer=tokenizer), a seq2seq.Tokenizer (or a transformers fast tokenizer)")
        byte_level = _is_byte_level(backend.decoder)
        self.stop_strings = [s.encode("utf-8") if byte_level else s for s in stop_strings]
        self.texts = _token_texts(backend, byte_level=byte_level)  # id -> text (bytes when byte_level)
        self.empty = b"" if byte_level else ""
        # Why this many tokens back: each has at least one character, so no match can reach farther (transformers
        # looks back as far).
        self.window = max(len(s) for s in self.stop_strings)

    def __call__(self, sequences):
        xp = get_array_module(sequences)
        rows = to_numpy(sequences[:, -self.window:]).tolist()  # [N, <= window]
        return xp.asarray([self._ends_with_stop(row) for row in rows], dtype=bool)

    def _ends_with_stop(self, row):
        texts = [self.texts.get(i, self.empty) for i in row]
        text, newest = self.empty.join(texts), len(texts[-1])
        for stop in self.stop_strings:
            # An occurrence ends inside the newest token iff it starts after len(text) - newest - len(stop).
            if stop in text[max(0, len(text) - newest - len(stop) + 1):]:
                return True
        return False


def _is_byte_level(decoder):
    """True when ``decoder`` (a ``tokenizers`` decoder, or None) is or contains GPT-2's ByteLevel decoder."""
    if decoder is None:
        return False
    if type(decoder).__name__ == "ByteLevel":
        return True
    try:
        state = json.loads(decoder.__getstate__())
    except (AttributeError, TypeError, ValueError):
        return False

    def has_byte_level(node):
        if isinstance(node, dict):
            return node.get("type") == "ByteLevel" or any(has_byte_level(v) for v in node.values())
        return isinstance(node, list) and any(has_byte_level(v) for v in node)
    return has_byte_level(state)


def _byte_decoder():
    """GPT-2's table from the printable characters it spells bytes with back to the bytes (``bytes_to_unicode``,
    inverted): printable Latin-1 bytes stand for themselves, the others for the characters from U+0100 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[chr(byte)] = byte
        else:
            table[chr(256 + extra)] = byte
            extra += 1
    return table


def _token_texts(backend, *, byte_level):
    """``{id: text}`` for the whole vocabulary: each token's text in mid-sentence (bytes when ``byte_level``)."""
    byte_decoder = _byte_decoder() if byte_level else None
    base = backend.encode(STATIC_PREFIX, add_special_tokens=False).tokens
    texts = {}
    for token, i in backend.get_vocab(with_added_tokens=True).items():
        if byte_level and all(c in byte_decoder for c in token):
            texts[i] = bytes(byte_decoder[c] for c in token)
            continue
        text = backend.decoder.decode(base + [token]) if backend.decoder is not None else " ".join(base + [token])
        text = text[text.index(STATIC_PREFIX) + len(STATIC_PREFIX):] if STATIC_PREFIX in text else text
        texts[i] = text.encode("utf-8") if byte_level else text
    return texts


class StoppingCriteria(list):
    """Criteria combined: a row is done when any criterion says so."""

    def __call__(self, sequences):
        done = None
        for criterion in self:
            verdict = criterion(sequences)
            done = verdict if done is None else done | verdict
        return done


def build_stopping_criteria(config, *, tokenizer=None, start=None):
    """The criteria a resolved config asks for (``max_time``, ``stop_strings``); an empty list when none."""
    criteria = StoppingCriteria()
    if config.max_time is not None:
        criteria.append(MaxTime(config.max_time, start=start))
    if config.stop_strings is not None:
        criteria.append(StopStrings(config.stop_strings, tokenizer))
    return criteria
