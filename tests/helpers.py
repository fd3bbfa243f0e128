"""Build a throwaway generated package from spec sources, for tests."""

from __future__ import annotations

import importlib
import sys
import uuid
from pathlib import Path

from generator.render import render_package, write_package

ROOT = Path(__file__).resolve().parent.parent  # the repository


def build_package(tmp_path: Path, specs: dict):
    """Write ``specs`` ({loss name: source}) to tmp_path/specs, generate, import the package."""
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir(parents=True, exist_ok=True)
    for name, source in specs.items():
        (spec_dir / f"{name}.py").write_text(source)
    package = f"generated_{uuid.uuid4().hex[:12]}"
    write_package(render_package(spec_dir), tmp_path / package)
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(package)
    finally:
        sys.path.remove(str(tmp_path))
