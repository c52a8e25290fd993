"""Configs: plain objects whose attributes are the fields of a JSON file (config.json, generation_config.json).

Each subclass lists its defaults (those of the transformers class of the same name); fields it does not know are
kept as they are, so a file read and written back loses nothing. ``aliases`` lets code ask every config for
``hidden_size`` even where the checkpoint calls it ``n_embd`` or ``d_model`` (transformers' ``attribute_map``).
The model configs are in ``models/config.py``, the generation config in ``generation/config.py``.

Each subclass also says what every field it knows may hold (``checks``), and a config checks them when it is made,
so a value of the wrong type or out of range is refused as it is read, with a ConfigError naming the class and the
field (``BertConfig.num_attention_heads must be a positive integer, got True``), instead of surfacing as a
TypeError deep in the model code or as a MemoryError while allocating.
"""
import copy
import json
import math
import os

from .errors import CheckpointNotFoundError, ConfigError


def read_json(path, *, what="JSON file", error=ConfigError):
    """Parse a JSON object from ``path``; ``what`` names the file in errors (``"config"``), which are ``error``
    (naming the path and line) when it is malformed, CheckpointNotFoundError when it is missing."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f"{what} {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except UnicodeDecodeError as e:
        raise error(f"{what} {path} is not UTF-8 text: {e}") from None
    except json.JSONDecodeError as e:
        raise error(f"{what} {path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except (ValueError, RecursionError) as e:  # an integer of over 4,300 digits; arrays nested thousands deep
        raise error(f"{what} {path} cannot be read: {e}") from None
    if not isinstance(data, dict):
        raise error(f"{what} {path} must hold a JSON object, not {type(data).__name__}")
    return data


# ---- what a field may hold --------------------------------------------------------------------------------------
# A check takes a field's value and returns None when the value will do, else what the field must be instead:
# "must be a positive integer", which ``Config.validate`` completes to "BertConfig.n must be ..., got True".

def is_int(value):
    """A JSON integer: an int, but not a bool (in Python True == 1; in a config, true is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    """A finite JSON number (Python's json module reads NaN and Infinity too)."""
    return is_int(value) or (isinstance(value, float) and math.isfinite(value))


def integer(*, minimum=1, maximum=None, optional=False):
    """An int >= ``minimum`` (1: a size or a count; 0: an index) and <= ``maximum``; null too when ``optional``."""
    expected = ("a positive integer" if minimum == 1 else f"an integer >= {minimum}") + (" or null" * optional)

    def check(value):
        if value is None and optional:
            return None
        if not is_int(value) or value < minimum:
            return f"must be {expected}"
        if maximum is not None and value > maximum:
            return f"must be at most {maximum:,}"
        return None
    return check


def number(expected, accept, *, optional=False):
    """A finite number for which ``accept(value)`` holds (``expected`` says which, in words); null too when
    ``optional``. An int will do where a float is meant (``"dropout": 0``), as in JSON."""
    def check(value):
        if (value is None and optional) or (is_number(value) and accept(value)):
            return None
        return f"must be {expected}" + (" or null" * optional)
    return check


def probability(*, optional=False):
    return number("a number in [0, 1]", lambda p: 0 <= p <= 1, optional=optional)


def boolean(value):
    return None if isinstance(value, bool) else "must be true or false"


def one_of(names):
    """A string out of ``names``."""
    def check(value):
        return None if isinstance(value, str) and value in names else f"must be one of {sorted(names)}"
    return check


def token_id(*, many=False):
    """A token id (an int >= 0) or null; with ``many``, also a non-empty list of ids (``eos_token_id``)."""
    def check(value):
        ids = value if many and isinstance(value, list) and value else [value]
        if value is None or all(is_int(i) and i >= 0 for i in ids):
            return None
        return "must be a token id (an integer >= 0)" + (", a list of them" * many) + " or null"
    return check


def shown(value, limit=80):
    """``repr(value)`` for an error message, cut to ``limit`` characters (a fuzzed value may be huge)."""
    if is_int(value) and value.bit_length() > 200:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class Config:
    """Base class: ``model_type``, ``defaults``, ``aliases`` and ``checks`` are set by each subclass."""

    model_type = None
    common = {}  # fields every config of a family shares (set by the family's base class)
    common_checks = {}  # and what they may hold
    defaults = {}
    aliases = {}  # idiomatic name -> the name this model's config.json uses
    checks = {}  # field name -> a check (above), applied whenever the field is present

    def __init__(self, **fields):
        for name, value in {**self.common, **self.defaults}.items():
            setattr(self, name, copy.deepcopy(value))
        fields.pop("model_type", None)
        for name, value in fields.items():
            name = self.aliases.get(name, name)
            if name.startswith("__") or hasattr(type(self), name):
                # Why: setattr would shadow a method (a "to_dict" field) or break the object ("__class__").
                raise ConfigError(f"{type(self).__name__} cannot hold a field named {name!r}: "
                                  "that is the name of one of its methods or class attributes")
            setattr(self, name, value)
        self.validate()

    def __getattr__(self, name):  # only called when normal lookup fails: resolve an alias
        aliases = type(self).aliases
        if name in aliases:
            return getattr(self, aliases[name])
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def validate(self):
        """Raise ConfigError naming the first field whose value its check refuses. Subclasses extend it with the
        rules that tie fields together (``hidden_size`` a multiple of ``num_attention_heads``)."""
        present = vars(self)
        for name, check in {**self.common_checks, **self.checks}.items():
            problem = check(present[name]) if name in present else None
            if problem:
                raise ConfigError(f"{type(self).__name__}.{name} {problem}, got {shown(present[name])}")

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise ConfigError(f"{cls.__name__}.from_dict expects a dict, got {type(d).__name__}")
        bad = [key for key in d if not isinstance(key, str)]
        if bad:
            raise ConfigError(f"{cls.__name__}.from_dict: field names must be strings, got {shown(bad[0])}")
        return cls(**d)

    @classmethod
    def from_json_file(cls, path):
        return cls.from_dict(read_json(path, what="config"))

    def to_dict(self):
        d = {name: copy.deepcopy(value) for name, value in vars(self).items()}
        if self.model_type is not None:
            d["model_type"] = self.model_type
        return d

    def to_json_file(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")

    def __eq__(self, other):
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f"{type(self).__name__}({json.dumps(self.to_dict(), sort_keys=True)})"
