"""Configs: plain objects whose attributes are the fields of a JSON file (config.json, generation_config.json).

Each subclass lists its defaults (those of the transformers class of the same name); fields it does not know are
kept as they are, so a file read and written back loses nothing. ``aliases`` lets code ask every config for
``hidden_size`` even where the checkpoint calls it ``n_embd`` or ``d_model`` (transformers' ``attribute_map``).
The model configs are in ``models/config.py``, the generation config in ``generation/config.py``.
"""
import copy
import json
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
    if not isinstance(data, dict):
        raise error(f"{what} {path} must hold a JSON object, not {type(data).__name__}")
    return data


class Config:
    """Base class: ``model_type``, ``defaults`` and ``aliases`` are set by each subclass."""

    model_type = None
    common = {}  # fields every config of a family shares (set by the family's base class)
    defaults = {}
    aliases = {}  # idiomatic name -> the name this model's config.json uses

    def __init__(self, **fields):
        for name, value in {**self.common, **self.defaults}.items():
            setattr(self, name, copy.deepcopy(value))
        fields.pop("model_type", None)
        for name, value in fields.items():
            setattr(self, self.aliases.get(name, name), value)
        self.validate()

    def __getattr__(self, name):  # only called when normal lookup fails: resolve an alias
        aliases = type(self).aliases
        if name in aliases:
            return getattr(self, aliases[name])
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def validate(self):
        """Raise ConfigError for values the model cannot be built from. Subclasses extend it."""

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise ConfigError(f"{cls.__name__}.from_dict expects a dict, got {type(d).__name__}")
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
