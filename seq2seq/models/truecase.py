"""Truecasing: the output of an uncased model written the way its training targets write it.

A model with an uncased WordPiece vocabulary (the shipped Debian summariser's) writes lower case, without accents,
with a space on each side of every punctuation mark:

    pylint plugin for integration with gitlab ci ( python 3 )

where Debian writes ``Pylint plugin for integration with GitLab CI (Python 3)``. ``Truecaser`` puts the capitals,
accents and spacing back. It changes nothing else: the words stay the ones the model chose. Two kinds of evidence:

1. **The source.** A synopsis reuses its description's words, and the description spells them right. Every run of
   two or more output words that the description contains, compared the way the uncased tokenizer compares them
   (case, accents and spacing ignored), is copied from the description with its spelling and spacing:
   ``( python 3 )`` -> ``(Python 3)``, ``gitlab ci`` -> ``GitLab CI``, ``server - side`` -> ``server-side``. A single
   word takes the spelling the description gives it most often. A capital that only starts a sentence is no
   evidence (``Penlight is ...`` does not say how ``penlight`` is written elsewhere), so a word written Title-case at
   a sentence start counts as unseen there; one with other capitals (``GNOME is ...``, ``GitLab is ...``) counts.
2. **A table learned from the training targets** (``Truecaser.learn``), shipped beside the model as truecase.json:
   ``words``, each word's most common spelling away from the start of a target, kept only where it is not the
   lower-case form (``python`` -> ``Python``); ``first_words``, the spelling a word most often has when it starts a
   target, where that differs (Debian is split about evenly on capitalising a synopsis's first word, but each word
   has its habit); and ``attached``, the pairs of neighbours usually written without a space between them
   (``"( w"``: an opening parenthesis and the word after it; ``"w ,"``, ``"+ +"``; ``w`` stands for any word).
   Hyphens are the one mark Debian writes both ways (``server-side``, ``Foo - Java library``): ``spaced_hyphens``
   holds the words that, next to a hyphen between two words, mostly have spaces around it.

Order of precedence for a word: a copied run; then the description's spelling; then ``words``; then the model's
own lower case. The output's first word, unless a copied run spells it, takes ``first_words`` before any
spelling without a capital.

    truecase = Truecaser.from_pretrained("weights/minilm-l6-debian-synopsis")   # None: the folder has no table
    truecase("pylint plugin for gitlab ci ( python 3 )", source="This plugin ... GitLab CI ... (Python 3) ...")

Words are split as BERT's pre-tokenizer splits them: a run of letters and digits, or one other visible character.
So only capitals, accents and spaces change, and ROUGE as rouge-score computes it (lower case, letters and digits)
scores the restored text as it scored the model's, except where an accent comes back (rouge-score drops accented
letters, in the reference too).
"""
import json
import os
import re
import unicodedata
from collections import Counter, defaultdict

from ..core.config import read_json
from ..core.errors import InputError
from . import hub

TRUECASE_FILE = "truecase.json"
WORDS = re.compile(r"[^\W_]+|[^\w\s]|_")  # a run of letters and digits, or one other visible character
SENTENCE_END = frozenset(".!?:")  # a capital after one of these (and a space) only starts a sentence
BULLETS = frozenset("*-+o")  # list items in Debian descriptions start with these at the start of a line
WORD = "w"  # the class of every word in ``attached``; a punctuation mark is its own class


def fold(word):
    """``word`` as the uncased tokenizer sees it: lower case, accents stripped (``Café`` -> ``cafe``)."""
    decomposed = unicodedata.normalize("NFD", word.lower())
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def split_words(text):
    """The words and marks of ``text``: a list of (text, start, end) with the offsets into ``text``."""
    return [(m.group(), m.start(), m.end()) for m in WORDS.finditer(text)]


def is_word(token):
    """True for a word (letters and digits), False for a mark."""
    return token[0].isalnum()


def classes(tokens):
    """Each token's class for spacing: ``w`` for a word, else the mark itself, with two exceptions that Debian
    spaces differently: a straight double quote is ``"open`` or ``"close`` by its parity in the text (they attach
    to opposite sides), and a hyphen next to another is ``--`` (``foo -- data``, where one hyphen joins words)."""
    out, quotes = [], 0
    for k, (text, _, _) in enumerate(tokens):
        if is_word(text):
            out.append(WORD)
        elif text == '"':
            out.append('"open' if quotes % 2 == 0 else '"close')
            quotes += 1
        elif text == "-" and "-" in (tokens[k - 1][0] if k else "", tokens[k + 1][0] if k + 1 < len(tokens) else ""):
            out.append("--")
        else:
            out.append(text)
    return out


def starts_sentence(text, tokens, k):
    """True when token ``k`` of ``text`` (``split_words`` of it) opens the text, a line, a list item or a sentence:
    a capital there is the convention's, not the word's."""
    if k == 0:
        return True
    previous, gap = tokens[k - 1], text[tokens[k - 1][2]:tokens[k][1]]
    if "\n" in gap:
        return True
    if previous[0] in SENTENCE_END and gap:
        return True
    return previous[0] in BULLETS and starts_sentence(text, tokens, k - 1)  # "* Foo" opening a line


def is_title(word):
    """``Foo`` or ``A``: the capital a sentence start gives any word."""
    return word[:1].isupper() and word[1:] == word[1:].lower()


def usual_spelling(counts, *, min_count=1):
    """The most common spelling in ``counts`` (a Counter), the lower-case form winning ties; None below
    ``min_count``."""
    spelling, count = max(counts.items(), key=lambda item: (item[1], item[0] == fold(item[0]), item[0]))
    return spelling if count >= min_count else None


class Truecaser:
    """Restores case, accents and spacing of an uncased model's output (see the module docstring)."""

    def __init__(self, *, words=None, first_words=None, attached=(), spaced_hyphens=()):
        self.words = dict(words or {})  # folded word -> its usual spelling, where not the folded form
        self.first_words = dict(first_words or {})  # folded word -> its usual spelling as a target's first word
        self.attached = frozenset(tuple(pair.split(" ")) for pair in attached)  # {(class, class)} written together
        self.spaced_hyphens = frozenset(spaced_hyphens)  # folded words with " - " beside them, not "-"

    # ------------------------------------------------------------------ learning, saving, loading

    @classmethod
    def learn(cls, targets, *, min_count=2):
        """The table of ``targets`` (the training synopses): a spelling, a first-word spelling or a spacing is
        kept when seen at least ``min_count`` times and more often than the alternative."""
        spellings, firsts = defaultdict(Counter), defaultdict(Counter)
        gaps, hyphens = defaultdict(Counter), defaultdict(Counter)
        for text in targets:
            tokens = split_words(text)
            kinds = classes(tokens)
            for k, (word, start, _) in enumerate(tokens):
                if is_word(word):
                    (firsts if k == 0 else spellings)[fold(word)][word] += 1
                if k > 0 and (kinds[k - 1], kinds[k]) != (WORD, WORD):  # two words always have a space between
                    gaps[kinds[k - 1], kinds[k]][start > tokens[k - 1][2]] += 1
                if kinds[k] == "-" and 0 < k < len(tokens) - 1 and kinds[k - 1] == kinds[k + 1] == WORD:
                    spaced = start > tokens[k - 1][2] or tokens[k + 1][1] > tokens[k][2]
                    for neighbour in (tokens[k - 1][0], tokens[k + 1][0]):
                        hyphens[fold(neighbour)][spaced] += 1
        words = {}
        for key, counts in spellings.items():
            spelling = usual_spelling(counts, min_count=min_count)
            if spelling is not None and spelling != key:
                words[key] = spelling
        first_words = {}
        for key, counts in firsts.items():
            spelling = usual_spelling(counts, min_count=min_count)
            if spelling is not None and spelling != words.get(key, key):
                first_words[key] = spelling
        attached = [f"{a} {b}" for (a, b), c in gaps.items() if c[False] > c[True] and c[False] >= min_count]
        spaced = [key for key, c in hyphens.items() if c[True] > c[False] and c[True] >= min_count]
        return cls(words=words, first_words=first_words, attached=attached, spaced_hyphens=spaced)

    def to_dict(self):
        return {"words": dict(sorted(self.words.items())), "first_words": dict(sorted(self.first_words.items())),
                "attached": sorted(" ".join(pair) for pair in self.attached),
                "spaced_hyphens": sorted(self.spaced_hyphens)}

    def save_pretrained(self, path):
        """Write truecase.json into the folder ``path``."""
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, TRUECASE_FILE), "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False, indent=0)
            f.write("\n")

    @classmethod
    def from_pretrained(cls, path, *, revision=None, cache_dir=None):
        """The table in ``path``/truecase.json (a folder or a Hub id), or None when there is none."""
        wanted = (hub.Wanted(((TRUECASE_FILE,),), optional=True),)
        folder = hub.resolve(path, files=wanted, revision=revision, cache_dir=cache_dir)
        file = os.path.join(folder, TRUECASE_FILE)
        if not os.path.isfile(file):
            return None
        data = read_json(file, what="truecasing table", error=InputError)
        unknown = set(data) - {"words", "first_words", "attached", "spaced_hyphens"}
        if unknown:
            raise InputError(f"truecasing table {file} has unknown fields {sorted(unknown)}")
        return cls(**data)

    # ------------------------------------------------------------------ restoring

    def __call__(self, text, source=""):
        """``text`` (an uncased model's output) with the case, accents and spacing of ``source`` (the text it was
        generated from) and of the table."""
        out = split_words(text)
        if not out:
            return ""
        keys = [fold(word) for word, _, _ in out]
        copied = copied_runs(keys, source)  # [N]: the source token each output token copies, or None
        spelled = source_spellings(source)
        kinds = classes(out)
        pieces = []
        for i, (word, _, _) in enumerate(out):
            if i > 0:
                pieces.append(self._gap(out, keys, kinds, copied, i, source))
            pieces.append(self._spell(word, keys[i], copied[i], spelled, first=i == 0))
        return "".join(pieces)

    def _spell(self, word, key, copy, spelled, *, first):
        if not is_word(word):
            return word
        if copy is not None and copy[1]:  # a run copied from the source, and its capital there is evidence
            return copy[0]
        from_source = spelled.get(key)
        if first and not (from_source and from_source != from_source.lower()):
            return self.first_words.get(key) or from_source or self.words.get(key) or word
        return from_source or self.words.get(key) or word

    def _gap(self, out, keys, kinds, copied, i, source):
        """The space (or none) between output tokens ``i - 1`` and ``i``."""
        if copied[i] is not None and copied[i - 1] is not None and copied[i][2] == copied[i - 1][2] + 1:
            return " " if source[copied[i - 1][4]:copied[i][3]] else ""  # within a copied run: as the source
        if "-" in (kinds[i], kinds[i - 1]):  # a hyphen between two words: spaced if a neighbour says so
            k = i if kinds[i] == "-" else i - 1
            if 0 < k < len(out) - 1 and kinds[k - 1] == kinds[k + 1] == WORD:
                return " " if {keys[k - 1], keys[k + 1]} & self.spaced_hyphens else ""
        return "" if (kinds[i - 1], kinds[i]) in self.attached else " "


def source_spellings(source):
    """Each folded word of ``source`` -> its most common spelling there, sentence-start capitals left out."""
    tokens = split_words(source or "")
    counts = defaultdict(Counter)
    for k, (word, _, _) in enumerate(tokens):
        if is_word(word) and not (is_title(word) and starts_sentence(source, tokens, k)):
            counts[fold(word)][word] += 1
    return {key: usual_spelling(c) for key, c in counts.items()}


def copied_runs(keys, source):
    """For each output token (``keys``, folded), the source token it copies, as (spelling, is_evidence, index,
    start, end), or None. Runs of two or more tokens are found greedily from the left, longest first (the earliest
    of equally long ones); shorter matches copy nothing here (``source_spellings`` spells single words)."""
    tokens = split_words(source or "")
    where = defaultdict(list)  # folded source word -> its positions
    for j, (word, _, _) in enumerate(tokens):
        where[fold(word)].append(j)
    folded = [fold(word) for word, _, _ in tokens]
    copied, i = [None] * len(keys), 0
    while i < len(keys):
        best, at = 0, None
        for j in where.get(keys[i], ()):
            n = 0
            while i + n < len(keys) and j + n < len(tokens) and keys[i + n] == folded[j + n]:
                n += 1
            if n > best:
                best, at = n, j
        if best >= 2:
            for n in range(best):
                word, start, end = tokens[at + n]
                evidence = not (is_title(word) and starts_sentence(source, tokens, at + n))
                copied[i + n] = (word, evidence, at + n, start, end)
            i += best
        else:
            i += 1
    return copied
