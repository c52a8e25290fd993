"""A size budget per file, as tinygrad keeps one: one concept per file, readable in one sitting."""
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "seq2seq"
MAX_LINES = 450


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_module_fits_the_budget(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines: split it where a second concept hides"


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_only_backend_imports_cupy(path):
    if path.name == "backend.py":
        return
    text = path.read_text(encoding="utf-8")
    assert "import cupy" not in text, f"{path.name} imports CuPy"
