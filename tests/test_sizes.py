"""The package's shape, checked: a size budget per file (as tinygrad keeps one: one concept per file, readable in
one sitting), CuPy imported in one place, and imports that run only downward through the reading order."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "seq2seq"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 400
# The subpackages in reading order (seq2seq/__init__.py): each may import only itself and those before it.
# The package's own top-level files (__init__, __main__, optim) come last: they gather the public names.
LAYERS = ("core", "fast", "nn", "generation", "models", "training", "cli")
# Where CuPy's raw APIs may be touched: the array module (and, for the GPU issue, the kernel loader).
CUPY_IMPORTERS = {"core/backend.py", "fast/cuda/kernels.py"}


def _name(path):
    return path.relative_to(PACKAGE).as_posix()


def _layer(parts):
    """The rank of a module given its dotted parts inside the package (``["nn", "layers"]``)."""
    return LAYERS.index(parts[0]) if parts and parts[0] in LAYERS else len(LAYERS)


def _imported_modules(path):
    """Dotted paths inside the package of every module ``path`` imports (relative and absolute imports)."""
    here = path.relative_to(PACKAGE).with_suffix("").parts[:-1]  # the importing module's package, as parts
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[:len(here) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "seq2seq":
                target = node.module.split(".")[1:]
            else:
                continue
            yield target, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "seq2seq":
                    yield alias.name.split(".")[1:], node.lineno


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_module_fits_the_budget(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{_name(path)} has {lines} lines: split it where a second concept hides"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_only_the_array_module_imports_cupy(path):
    if _name(path) in CUPY_IMPORTERS:
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        assert not any(n.split(".")[0] in ("cupy", "cupyx") for n in names), \
            f"{_name(path)} imports CuPy (line {node.lineno}); only {sorted(CUPY_IMPORTERS)} may"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_imports_run_only_downward(path):
    own = _layer(path.relative_to(PACKAGE).parts)
    for target, line in _imported_modules(path):
        assert _layer(target) <= own, (f"{_name(path)} line {line} imports seq2seq.{'.'.join(target)}, "
                                       f"which comes after it in the reading order {LAYERS}")


def test_the_layer_rule_catches_an_upward_import(tmp_path, monkeypatch):
    """The check above can fail: a core module importing nn is reported."""
    fake = tmp_path / "seq2seq"
    (fake / "core").mkdir(parents=True)
    bad = fake / "core" / "bad.py"
    bad.write_text("from ..nn.layers import Linear\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    with pytest.raises(AssertionError, match="comes after it"):
        test_imports_run_only_downward(bad)
