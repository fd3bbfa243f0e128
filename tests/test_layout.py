"""The compiler's folders are its pipeline: each stage imports only from the stages before it.

A stage is a module or a folder of ``generator/``; within a stage modules may
import each other, but no stage reaches into a later one, no module imports
another module's private (``_``) name, and the two backends never import
each other (a backend is its folder and its template folder).
"""

from __future__ import annotations

import ast

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "generator"
# In pipeline order: what a user writes, derivation, shared lowering, the backends, the package, the tools.
STAGES = ("spec", "ir", "shift", "lattice", "derive", "describe", "lower", "backends", "render", "tools", "__main__")
BACKENDS = ("backends.mlx", "backends.gpu")


def _module_name(path):
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(part for part in parts if part != "__init__")


def _imports(path):
    """``(imported module, [names])`` of every import of a ``generator`` module in ``path``, made absolute."""
    module = _module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("generator"):
                target = node.module.removeprefix("generator").lstrip(".")
            else:
                continue
            found.append((target, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name.removeprefix("generator").lstrip("."), []) for a in node.names
                      if a.name.startswith("generator")]
    return found


def _stage(module):
    return STAGES.index(module.split(".")[0])


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_stage():
    for path in MODULES:
        name = _module_name(path)
        assert name == "" or name.split(".")[0] in STAGES, f"{name} is in no stage of the pipeline"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p) or "generator")
def test_a_stage_imports_only_earlier_stages_and_public_names(path):
    module = _module_name(path)
    if not module:
        return  # the package's own docstring
    for target, names in _imports(path):
        # `from . import x` names modules: the stage is the module's.
        targets = [f"{target}.{n}".strip(".") if (PACKAGE / target.replace(".", "/") / f"{n}.py").exists()
                   or (PACKAGE / target.replace(".", "/") / n).is_dir() else target for n in names or [""]]
        for imported in targets:
            assert _stage(imported) <= _stage(module), f"{module} imports the later stage {imported}"
            mine, theirs = (next((b for b in BACKENDS if m == b or m.startswith(b + ".")), None)
                            for m in (module, imported))
            assert not (mine and theirs and mine != theirs), f"the backend {module} imports the backend {imported}"
        private = [n for n in names if n.startswith("_") and n != "__all__"]
        assert not private, f"{module} imports the private {', '.join(private)} of {target}"
