"""``losscc new NAME``: a commented spec to fill in, valid as written.

The template compiles as it stands, so ``losscc new`` followed by
``losscc generate`` always works; the user then edits the formula.
"""

from __future__ import annotations

import keyword
import tempfile
from pathlib import Path

import jinja2

from ..backends.source import TEMPLATES
from ..spec.load import SpecFileError, load_spec

KINDS = ("elementwise", "rowwise")


def check_name(name):
    """Raise ValueError unless ``name`` can name a loss (a module and a function)."""
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"loss name {name!r} must be a Python identifier (not a keyword) such as my_loss")
    if name.startswith("_"):
        raise ValueError(f"loss name {name!r} must not start with an underscore (such files are not specs)")


def template(name, kind="elementwise"):
    """The text of a new spec named ``name``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    return env.get_template(f"scaffold/{kind}.py.j2").render(name=name)


def write_spec(spec_dir, name, kind="elementwise"):
    """Write ``spec_dir/NAME.py`` from the template; never overwrite. Returns its path.

    The text is loaded as a spec first, so a name the spec vocabulary refuses
    (one that clashes with a name the template or the generated code uses) is
    reported before any file is written.
    """
    check_name(name)
    path = Path(spec_dir) / f"{name}.py"
    if path.exists():
        raise FileExistsError(f"{path} already exists; edit it, or choose another name")
    text = template(name, kind)
    with tempfile.TemporaryDirectory() as scratch:
        trial = Path(scratch, Path(spec_dir).resolve().name, f"{name}.py")  # errors name it as it will be
        trial.parent.mkdir()
        trial.write_text(text)
        try:
            load_spec(trial)
        except SpecFileError as error:
            raise ValueError(f"cannot write a spec named {name!r}: {error}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x") as handle:  # "x": fail rather than overwrite a file created meanwhile
        handle.write(text)
    return path
