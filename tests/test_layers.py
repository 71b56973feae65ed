"""The direction of dependence: bindings -> steplog -> query -> engine, checked on the
import statements of every module (also those inside functions)."""

from __future__ import annotations

import ast
import pathlib

import pytest

from steplog.engine.index import IndexReader, IndexWriter

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAYERS = {"engine": "engine", "query": "query", "steplog": "steplog", "bindings": "bindings"}
# what each layer may import, as dotted prefixes under steplog
ALLOWED = {
    "engine": ("steplog.engine",),
    "query": ("steplog.engine", "steplog.query"),
    "steplog": ("steplog",),
    "bindings": ("steplog",),
}
FORBIDDEN = {
    "query": ("steplog.engine.writer",),   # the read side knows nothing of the flusher
    "steplog": ("steplog.bindings",),
}
# The command-line fronts of the importers that live in a binding: each imports its
# binding inside the command, and nothing else in steplog/ may.
BINDING_COMMANDS = {"steplog/commands/import_mlflow.py": "steplog.bindings.mlflow",
                    "steplog/commands/import_tensorboard.py": "steplog.bindings.tensorboard"}


def package_of(folder: str, path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
    base = "steplog" if folder == "steplog" else f"steplog.{folder}"
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join([base, *parts])
    return ".".join([base, *parts[:-1]])


def imports_of(path: pathlib.Path, package: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found += [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
    return [name for name in found if name == "steplog" or name.startswith("steplog.")]


MODULES = [(folder, path) for folder in LAYERS for path in sorted((ROOT / folder).rglob("*.py"))]


@pytest.mark.parametrize("folder, path", MODULES, ids=[str(p.relative_to(ROOT)) for _, p in MODULES])
def test_module_imports_only_what_its_layer_may(folder, path):
    crossing = BINDING_COMMANDS.get(str(path.relative_to(ROOT)))
    for name in imports_of(path, package_of(folder, path)):
        assert name.startswith(ALLOWED[folder]) or name in ALLOWED[folder], f"{path.name} imports {name}"
        if crossing and name.startswith(crossing):
            continue
        for prefix in FORBIDDEN.get(folder, ()):
            assert not name.startswith(prefix), f"{path.name} imports {name}"


def test_the_checker_sees_a_wrong_import():
    bad = ROOT / "query" / "read.py"
    names = imports_of(bad, "steplog.query")
    assert "steplog.engine.block" in names   # relative imports resolve to full names


def test_index_reader_has_no_write_method():
    writes = {name for name in vars(IndexWriter) if not name.startswith("__")}
    assert writes, "IndexWriter defines the writes"
    assert not writes & set(dir(IndexReader)), writes & set(dir(IndexReader))
