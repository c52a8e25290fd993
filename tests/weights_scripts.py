"""Test helpers for the scripts and the model in weights/ (not a package): load a script as a module, read the
header of a safetensors file they wrote."""
import importlib.util
import json
import struct
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def load_module(name):
    """weights/NAME.py, imported by path."""
    spec = importlib.util.spec_from_file_location(name, WEIGHTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def safetensors_header(path):
    """The tensor entries of a safetensors file's JSON header (name -> dtype, shape, offsets)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header
