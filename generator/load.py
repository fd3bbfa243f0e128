"""Loading spec files: run each one, take its ``spec``, check it.

Every problem is reported as a :class:`SpecFileError` naming the file, so
``make generate`` prints one readable line instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path

from .spec import Loss, SpecError


class SpecFileError(Exception):
    def __init__(self, path, message):
        super().__init__(f"{path}: {message}")
        self.path = path


def spec_paths(spec_dir, names=None):
    """The spec files in ``spec_dir`` (sorted), or those named."""
    spec_dir = Path(spec_dir)
    paths = sorted(p for p in spec_dir.glob("*.py") if not p.name.startswith("_"))
    if names:
        by_name = {p.stem: p for p in paths}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise SpecFileError(spec_dir, f"no spec named {', '.join(missing)}")
        paths = [by_name[n] for n in names]
    return paths


def load_spec(path, root=None):
    """Execute one spec file and return its validated :class:`Loss`."""
    path = Path(path)
    shown = path.relative_to(root) if root and path.is_relative_to(root) else path
    module_name = f"_losscc_spec_{path.stem}"
    try:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except SpecError as error:
        raise SpecFileError(shown, str(error)) from None
    except SyntaxError as error:
        raise SpecFileError(shown, f"line {error.lineno}: syntax error: {error.msg}") from None
    except Exception as error:  # a user's spec may raise anything; report where
        frame = next((f for f in reversed(traceback.extract_tb(error.__traceback__)) if f.filename == str(path)), None)
        where = f"line {frame.lineno}: " if frame else ""
        raise SpecFileError(shown, f"{where}{type(error).__name__}: {error}") from None
    finally:
        sys.modules.pop(module_name, None)
    loss = getattr(module, "spec", None)
    if not isinstance(loss, Loss):
        raise SpecFileError(shown, "must define `spec = Loss(...)`")
    if loss.name != path.stem:
        raise SpecFileError(shown, f"loss name {loss.name!r} must match the file name {path.stem!r}")
    loss.source = str(shown)
    return loss
