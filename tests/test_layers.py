"""Layers import one way: cli -> serve -> clinical -> eval -> runtime -> export -> backends ->
artifacts -> models / io / preprocess -> errors, every import scanned (in-function ones too).

And creating a backend never exports: a missing set is the caller's to build.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "samfast"

# The layer map: a module may import its own package or a package of a lower rank. The middle
# layer (runtime / eval / export / clinical / serve) is ordered too: export builds sets for the
# runtime, eval drives the runtime (and checks exported sets), clinical uses eval's metrics,
# serve runs clinical sessions.
RANKS = {
    "errors": 0,
    "models": 1,
    "io": 1,
    "preprocess": 1,
    "artifacts": 2,
    "backends": 3,
    "export": 4,
    "runtime": 5,
    "eval": 6,
    "clinical": 7,
    "serve": 8,
    "cli": 9,
    "__main__": 10,
}
# The root package holds __version__ for everyone and is the lazy facade (samfast.Predictor), so
# importing it is allowed from anywhere and its own in-function imports are not arrows.
ROOT = "samfast"
# Arrows known to run the wrong way, each with the change that removes it. An entry that no longer
# matches an import fails the test, so the list can only shrink.
KNOWN_WRONG_WAY: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every samfast import in the file, wherever it is written."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from samfast import preprocess` imports the module samfast.preprocess
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append((node.lineno, candidate if _is_module(candidate) else base))
    return [(line, name) for line, name in found if name == ROOT or name.startswith(ROOT + ".")]


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def arrows() -> list[tuple[str, int, str]]:
    """(importing module, line, imported module) for every import between two samfast layers."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = module_name(path)
        if source == ROOT:
            continue
        for line, target in imported_modules(path):
            if target != ROOT and layer(target) != layer(source):
                found.append((source, line, target))
    return found


def test_every_package_has_a_place_in_the_layer_map():
    packages = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert packages - {"__init__"} == set(RANKS)


def test_no_import_runs_the_wrong_way():
    wrong, used = [], set()
    for source, line, target in arrows():
        if RANKS[layer(target)] < RANKS[layer(source)]:
            continue
        if (source, layer(target)) in KNOWN_WRONG_WAY:
            used.add((source, layer(target)))
            continue
        wrong.append(f"{source}:{line} imports {target} ({layer(source)} -> {layer(target)})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)
    assert used == KNOWN_WRONG_WAY, f"remove stale KNOWN_WRONG_WAY entries: {KNOWN_WRONG_WAY - used}"


def test_scanner_sees_in_function_and_relative_imports(tmp_path, monkeypatch):
    """The scan would miss nothing a reviewer would count: imports inside functions and relative ones."""
    fake = tmp_path / "samfast"
    (fake / "backends").mkdir(parents=True)
    (fake / "eval").mkdir()
    for init in (fake / "__init__.py", fake / "backends" / "__init__.py", fake / "eval" / "__init__.py"):
        init.write_text("")
    (fake / "eval" / "parity.py").write_text("TOLERANCES = {}\n")
    (fake / "backends" / "x.py").write_text(
        "def register():\n    from ..eval.parity import TOLERANCES\n    import samfast.eval\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert [t for _, t in imported_modules(fake / "backends" / "x.py")] == [
        "samfast.eval.parity",
        "samfast.eval",
    ]


def test_creating_a_backend_never_exports(tmp_path):
    from samfast.artifacts.layout import MissingSet
    from samfast.backends import create_backend
    from samfast.models import resolve_weights

    weights = resolve_weights("tiny_vit_test")
    with pytest.raises(MissingSet) as missing:
        create_backend("onnxruntime", "tiny_vit_test", weights, engine_dir=tmp_path)
    assert missing.value.buildable and "samfast export --model tiny_vit_test --format onnx" in str(
        missing.value
    )
    assert not any(tmp_path.iterdir()), "create_backend wrote into the engine folder"


def test_the_predictor_builds_a_missing_set_and_says_so(tmp_path):
    from samfast.runtime.predictor import Predictor

    messages: list[str] = []
    predictor = Predictor("tiny_vit_test", "onnxruntime", engine_dir=tmp_path, log=messages.append)
    assert any(m.startswith("exporting the onnx set for tiny_vit_test") for m in messages)
    assert predictor.backend.folder.is_relative_to(tmp_path)
    assert (predictor.backend.folder / "manifest.json").is_file()
