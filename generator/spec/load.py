"""Loading spec files: run each one, take its ``spec``, check it.

Every problem is reported as a :class:`SpecFileError` naming the file, so
``losscc generate`` prints one readable line instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path

from .vocabulary import Loss, SpecError


class SpecFileError(Exception):
    """A problem with one spec file (or the spec folder): one line, naming it."""

    def __init__(self, path, message):
        message = " ".join(str(message).splitlines())
        super().__init__(f"{path}: {message}")
        self.path = path


def spec_paths(spec_dir, names=None):
    """The spec files in ``spec_dir`` (sorted), or those named."""
    spec_dir = Path(spec_dir)
    if not spec_dir.is_dir():
        raise SpecFileError(spec_dir, "is not a folder of spec files")
    paths = sorted(p for p in spec_dir.glob("*.py") if not p.name.startswith("_"))
    if names:
        by_name = {p.stem: p for p in paths}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise SpecFileError(spec_dir, f"no spec named {', '.join(missing)}")
        paths = [by_name[n] for n in names]
    return paths


def check_spec_names(spec_dir, paths):
    """Refuse a set of spec files that cannot make one package.

    An empty (or mistyped) folder would replace generated/ by an empty
    package; a loss is named after its file, and generated/<name>.py must be
    distinct on case-insensitive file systems too.
    """
    if not paths:
        raise SpecFileError(spec_dir, "holds no spec files (specs/<loss>.py)")
    seen = {}
    for path in paths:
        other = seen.setdefault(path.stem.lower(), path)
        if other is not path:
            raise SpecFileError(path, f"loss name {path.stem!r} clashes with {other.stem!r} from {other}")


def _line_in(path, error):
    """'line N: ' for the deepest frame of ``error`` inside the spec file, if any."""
    frames = traceback.extract_tb(error.__traceback__)
    frame = next((f for f in reversed(frames) if f.filename == str(path)), None)
    return f"line {frame.lineno}: " if frame else ""


def load_spec(path):
    """Execute one spec file and return its validated :class:`Loss`.

    Its ``source``, which errors and the generated files' headers name, is
    the spec folder's name and the file's (``specs/<loss>.py``): the same
    wherever the project lies, so generation does not depend on it.
    """
    path = Path(path)
    shown = Path(path.resolve().parent.name, path.name)
    if not str(shown).isprintable():
        # The path is printed into the generated files' headers.
        raise SpecFileError(ascii(str(shown)), "the spec's path holds unprintable characters")
    module_name = f"_losscc_spec_{path.stem}"
    try:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except SpecError as error:
        raise SpecFileError(shown, f"{_line_in(path, error)}{error}") from None
    except SyntaxError as error:
        raise SpecFileError(shown, f"line {error.lineno}: syntax error: {error.msg}") from None
    except SystemExit:
        raise SpecFileError(shown, "the spec called exit() while loading") from None
    except Exception as error:  # a user's spec may raise anything; report where
        raise SpecFileError(shown, f"{_line_in(path, error)}{type(error).__name__}: {error}") from None
    finally:
        sys.modules.pop(module_name, None)
    loss = getattr(module, "spec", None)
    if not isinstance(loss, Loss):
        raise SpecFileError(shown, "must define `spec = Loss(...)`")
    if loss.name != path.stem:
        raise SpecFileError(shown, f"loss name {loss.name!r} must match the file name {path.stem!r} "
                                   "(the file name is the generated module's name)")
    loss.source = str(shown)
    return loss


def load_specs(spec_dir):
    """The validated losses of every spec in ``spec_dir``."""
    paths = spec_paths(spec_dir)
    check_spec_names(spec_dir, paths)
    return [load_spec(path) for path in paths]
