"""Broken and hostile specs: one error line naming the spec file and the problem, nothing written.

Every protection of the loader and the validator has a case here: the spec
is written next to a valid one and rendered; it must fail with a
SpecFileError whose single line names the file and says what is wrong. A
sample of them also runs through the command line, which must exit non-zero
with that one line and leave the output folder exactly as it was. Hostile
but valid specs (docstrings holding triple quotes or Jinja, values whose
repr is code) must generate code that says exactly what the spec said.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import importlib
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from generator.backends.gpu.printer import _RESERVED as KERNEL_NAMES
from generator.backends.gpu.printer import c_name
from generator.render import render_package, write_package
from generator.spec.load import SpecFileError, load_specs
from generator.spec.terms import collect_terms
from generator.spec.vocabulary import (
    GENERATED_NAME_FORMS, GENERATED_NAMES, HEAD_NAMES, SEQUENCE_FORM_NAMES, TEMPERATURE_NAME,
)
from tests.helpers import build_package

ROOT = Path(__file__).resolve().parent.parent
PRELUDE = "from sympy import *\nfrom generator.spec import *\n\n"
VALID = (ROOT / "specs" / "mse_loss.py").read_text() if (ROOT / "specs" / "mse_loss.py").exists() else None


def _spec(body, name="bad_loss"):
    """A spec file's source: the prelude, declarations x, y, and ``body``."""
    return PRELUDE + f'x, y = Input("x"), Input("y")\nNAME = "{name}"\n' + textwrap.dedent(body)


def _loss(formula="x - y", extra="", name="bad_loss"):
    return _spec(f"{extra}\nspec = Loss(NAME, inputs=[x, y], elementwise={formula})\n", name)


def _recurrence(step, start="[0]", separator="None", inputs="a.inputs", extra=""):
    """A recurrence loss's spec: an Alignment ``a`` and ``step``."""
    return _spec(f"""
        a = Alignment("lp", "labels", "frames", "counts", separator={separator})
        spec = Loss(NAME, inputs={inputs}, recurrence=a.recurrence({step}, start={start}, end=[-1]){extra})
    """)


# (id, file name, source, fragment the message must hold)
CASES = [
    ("syntax-error", "bad_loss", PRELUDE + "x = (\n", "syntax error"),
    ("python-error", "bad_loss", PRELUDE + "1 / 0\n", "ZeroDivisionError"),
    ("multi-line-error", "bad_loss", PRELUDE + "raise ValueError('first line\\nsecond line')\n",
     "first line second line"),
    ("exit", "bad_loss", PRELUDE + "import sys\nsys.exit(3)\n", "exit()"),
    ("no-spec", "bad_loss", PRELUDE + "x = 1\n", "must define `spec = Loss(...)`"),
    ("spec-not-a-loss", "bad_loss", PRELUDE + "spec = 42\n", "must define `spec = Loss(...)`"),
    ("undeclared-symbol", "bad_loss", _loss("x - Symbol('z')"), "symbol 'z' is used in the formula but not declared"),
    ("undeclared-in-term", "bad_loss", _loss("Term('scaled', x * Symbol('w')) - y"), "symbol 'w'"),
    ("unsupported-function", "bad_loss", _loss("gamma(x) - y"), "function 'gamma' is not supported"),
    ("undefined-function", "bad_loss", _loss("Function('f')(x) - y"), "function 'f' is not supported"),
    ("max", "bad_loss", _loss("Max(x, y)"), "Max has no gradient rule"),
    ("floor", "bad_loss", _loss("floor(x) - y"), "floor has no gradient rule"),
    ("heaviside", "bad_loss", _loss("Heaviside(x) * y"), "Heaviside has no gradient rule"),
    ("derivative", "bad_loss", _loss("Derivative(Function('g')(x), x) + y"), "not supported"),
    ("integral", "bad_loss", _loss("Integral(x, x) + y"), "Integral"),
    ("complex", "bad_loss", _loss("x + I * y"), "ImaginaryUnit"),
    ("infinity", "bad_loss", _loss("x + y + oo"), "not a finite real number"),
    ("nan", "bad_loss", _loss("x * y * nan"), "not a finite real number"),
    ("piecewise-without-default", "bad_loss", _loss("Piecewise((x, x > y))"), "needs a last branch"),
    ("comparison-as-value", "bad_loss", _loss("Piecewise((x > y, x > 0), (y > 0, True))"),
     "may only be a Piecewise condition"),
    ("relation-as-formula", "bad_loss", _loss("x > y"), "must be a numeric SymPy expression"),
    ("string-formula", "bad_loss", _loss("'x - y'"), "not a string"),
    ("string-term", "bad_loss", _loss("Term('d', 'x - y')"), "not a string"),
    ("cyclic-terms", "bad_loss", _loss("t", "t = Term('t', x)\nt.definition = t + 1\n"), "cycle"),
    ("identifier", "bad_loss", _loss("x - Input('1x')"), "'1x' is not a valid Python identifier"),
    ("keyword", "bad_loss", _loss("x - Input('lambda')"), "'lambda' is not a valid Python identifier"),
    ("code-in-name", "bad_loss", _loss("x - Input('x); import os; (')"), "is not a valid Python identifier"),
    ("non-ascii-name", "bad_loss", _loss("x - Input('\u00e9')"), "is not a valid Python identifier"),
    ("str-subclass-name", "bad_loss",
     _loss("x - Input(S('x y'))", "class S(str):\n    def isidentifier(self):\n        return True\n"),
     "is not a valid Python identifier"),
    ("underscore-name", "bad_loss", _loss("x - Input('_x')"), "must not start with an underscore"),
    ("reserved-name", "bad_loss", _loss("x - Input('loss')"), "'loss' is reserved"),
    ("reserved-module", "bad_loss", _loss("x - Input('mx')"), "'mx' is reserved"),
    ("reserved-local", "bad_loss", _loss("x - Input('forward')"), "'forward' is reserved"),
    ("reserved-weights", "bad_loss", _loss("x - Input('weights')"), "'weights' is reserved"),
    ("temporary-form", "bad_loss", _loss("x - Input('t0')"), "'t0' has a form the generated code uses"),
    ("reduction-form", "bad_loss", _loss("x - Input('sum0')"), "'sum0' has a form the generated code uses"),
    ("term-reserved", "bad_loss", _loss("Term('loss', x - y)"), "'loss' is reserved"),
    ("parameter-value-form", "bad_loss",
     _spec("d = Param('delta', 1.0)\nv = Input('delta_value')\n"
           "spec = Loss(NAME, inputs=[x, v], params=[d], elementwise=x - v + d)\n"),
     "'delta_value' has a form the generated code uses"),
    ("kernel-identifier-clash", "bad_loss",
     _spec("v, w = Input('value'), Input('value_')\nspec = Loss(NAME, inputs=[v, w], elementwise=v - w)\n"),
     "'value' and 'value_' are the same identifier in the generated kernels"),
    ("term-clash", "bad_loss", _loss("Term('x', x - y)"), "term name 'x' is already used"),
    ("loss-keyword", "class", PRELUDE + 'x = Input("x")\nspec = Loss("class", inputs=[x], elementwise=x)\n',
     "'class' is not a valid Python identifier"),
    ("loss-reserved", "math", PRELUDE + 'x = Input("x")\nspec = Loss("math", inputs=[x], elementwise=x)\n',
     "'math' is reserved"),
    ("loss-named-like-the-kernels", "kernels", PRELUDE + 'x = Input("x")\nspec = Loss("kernels", inputs=[x], elementwise=x)\n',
     "'kernels' is reserved"),
    ("loss-named-like-set-backend", "set_backend",
     PRELUDE + 'x = Input("x")\nspec = Loss("set_backend", inputs=[x], elementwise=x)\n', "'set_backend' is reserved"),
    ("loss-name-not-file-name", "other_loss", _spec("spec = Loss('mse_loss', inputs=[x, y], elementwise=x - y)\n"),
     "must match the file name"),
    ("argument-named-like-loss", "bad_loss",
     PRELUDE + 'x = Input("bad_loss")\nspec = Loss("bad_loss", inputs=[x], elementwise=x)\n', "the loss's own name"),
    ("declared-twice", "bad_loss", _spec("spec = Loss(NAME, inputs=[x, Input('x')], elementwise=x)\n"),
     "declared twice"),
    ("param-without-default", "bad_loss", _loss("x - y", "d = Param('delta')\n"), "'delta' has no default"),
    ("flag-without-default", "bad_loss", _loss("x - y", "f = Flag('full')\n"), "'full' has no default"),
    ("param-not-a-number", "bad_loss", _loss("x - y", "d = Param('delta', '1.0')\n"), "must be a number"),
    ("param-nan", "bad_loss", _loss("x - y", "d = Param('delta', float('nan'))\n"), "must be finite"),
    ("param-outside-range", "bad_loss", _loss("x - y", "d = Param('delta', -1.0, range='(0, inf)')\n"),
     "outside its range"),
    ("range-nan", "bad_loss", _loss("x - y", "d = Param('delta', 1.0, range='(nan, 2)')\n"), "not a number"),
    ("range-code", "bad_loss", _loss("x - y", "d = Param('delta', 1.0, range='(0, __import__(\"os\"))')\n"),
     "must look like"),
    ("select-without-flag", "bad_loss", _loss("Select(y, x, -x)"), "Select's first argument must be a Flag"),
    ("flag-outside-select", "bad_loss",
     _spec("f = Flag('full', False)\nspec = Loss(NAME, inputs=[x, y], params=[f], elementwise=x * f + y)\n"),
     "may only appear as Select"),
    ("flag-outside-and-inside-select", "bad_loss",
     _spec("f = Flag('full', False)\n"
           "spec = Loss(NAME, inputs=[x, y], params=[f], elementwise=Select(f, x, y) + f * x)\n"),
     "may only appear as Select"),
    ("weights-in-formula", "bad_loss",
     _spec("w = Weights()\nspec = Loss(NAME, inputs=[x, y], weights=w, elementwise=w * (x - y))\n"),
     "applied by the generator"),
    ("weights-name", "bad_loss", _spec("spec = Loss(NAME, inputs=[x, y], weights=Weights('lambda'), elementwise=x)\n"),
     "Weights name 'lambda' is not a valid Python identifier"),
    ("reduction-in-elementwise", "bad_loss", _loss("RowSum(x) - y"), "row reduction"),
    ("element-outside-reduction", "bad_loss",
     _spec("spec = Loss(NAME, inputs=[x, y], axis=-1, row=x + RowSum(y))\n"), "used outside a row reduction"),
    ("gather-without-target", "bad_loss", _spec("spec = Loss(NAME, inputs=[x, y], axis=-1, row=Gather(x, y))\n"),
     "Gather's second argument must be a ClassTarget"),
    ("class-target-elementwise", "bad_loss",
     _spec("t = ClassTarget('t')\nspec = Loss(NAME, inputs=[x, t], elementwise=x)\n"), "need a row-wise loss"),
    ("no-element-input", "bad_loss",
     _spec("r = Input('r', per_row=True)\nspec = Loss(NAME, inputs=[r], axis=-1, row=r)\n"),
     "at least one element-level float Input"),
    ("unknown-domain", "bad_loss",
     _spec("r = Input('r', domain='probability')\nspec = Loss(NAME, inputs=[r], elementwise=r)\n"),
     "domain of input 'r' must be one of ('real', 'log_probabilities'), got 'probability'"),
    ("both-forms", "bad_loss", _spec("spec = Loss(NAME, inputs=[x, y], elementwise=x, row=RowSum(x), axis=-1)\n"),
     "exactly one of elementwise="),
    ("row-without-axis", "bad_loss", _spec("spec = Loss(NAME, inputs=[x, y], row=RowSum(x))\n"),
     "integer default axis"),
    ("bool-axis", "bad_loss", _spec("spec = Loss(NAME, inputs=[x, y], row=RowSum(x), axis=True)\n"),
     "integer default axis"),
    ("bad-default-reduction", "bad_loss", _spec("spec = Loss(NAME, inputs=[x, y], elementwise=x, reduction='avg')\n"),
     "default reduction must be one of"),
    ("inputs-not-a-list", "bad_loss", _spec("spec = Loss(NAME, inputs=x, elementwise=x)\n"), "must be a list"),
    ("doc-not-text", "bad_loss", _spec("spec = Loss(NAME, inputs=[x, y], elementwise=x, doc=3)\n"),
     "doc must be a string"),
    ("parameter-alone-in-stable-function", "bad_loss",
     _spec("d = Param('delta', 1.0)\nspec = Loss(NAME, inputs=[x, y], params=[d], elementwise=x * sigmoid(d))\n"),
     "cannot be compiled"),
    ("sequence-name", "bad_loss", _spec("c = Sequence('chosen')\nspec = Loss(NAME, inputs=[c, y], elementwise=c - y)\n"),
     "its name ends in '_logps'"),
    ("sequence-in-row-loss", "bad_loss",
     _spec("c = Sequence('c_logps')\nspec = Loss(NAME, inputs=[c, y], row=RowSum(c - y), axis=-1)\n"),
     "Sequence inputs are for elementwise losses"),
    ("nll-without-sequences", "bad_loss", _spec("spec = Loss(NAME, inputs=[x, y], elementwise=x - y, nll=True)\n"),
     "nll= is for losses of Sequence inputs"),
    ("sequence-form-argument", "bad_loss",
     _spec("c, a = Sequence('c_logps'), Param('alpha', 1.0)\nspec = Loss(NAME, inputs=[c, y], params=[a], elementwise=a * c)\n"),
     "'alpha' is an argument of the linear_ form"),
    ("sequence-derived-name", "bad_loss",
     _spec("c, h = Sequence('c_logps'), Input('c_hidden')\nspec = Loss(NAME, inputs=[c, h], elementwise=c - h)\n"),
     "'c_hidden' is the linear_ form's argument for sequence 'c_logps'"),
    ("sequence-token-loss", "bad_loss",
     _spec("c = Sequence('c_logps', token_loss='mse_loss')\nspec = Loss(NAME, inputs=[c, y], elementwise=c - y)\n"),
     "input 'c_logps': token_loss 'mse_loss' must be a loss of these specs of logits and class targets"),
    ("contrastive-name", "bad_loss",
     _spec("c = Contrastive('c', queries='a', keys='b')\nspec = Loss(NAME, inputs=[c, y], elementwise=c - y)\n"),
     "its name ends in '_logps'"),
    ("contrastive-same-arrays", "bad_loss",
     _spec("c = Contrastive('c_logps', queries='a', keys='a')\nspec = Loss(NAME, inputs=[c, y], elementwise=c - y)\n"),
     "queries and keys are two arrays"),
    ("contrastive-scale", "bad_loss",
     _spec("c = Contrastive('c_logps', queries='a', keys='b', scale=2.0)\nspec = Loss(NAME, inputs=[c], elementwise=-c)\n"),
     "must be a float Param"),
    ("contrastive-two-scales", "bad_loss",
     _spec("s, t = Param('s', 1.0), Param('t', 2.0)\nc = Contrastive('c_logps', queries='a', keys='b', scale=s)\n"
           "e = Contrastive('e_logps', queries='b', keys='a', scale=t)\nspec = Loss(NAME, inputs=[c, e], elementwise=c + e)\n"),
     "share one scale"),
    ("contrastive-declared-name", "bad_loss",
     _spec("c = Contrastive('c_logps', queries='y', keys='b')\nspec = Loss(NAME, inputs=[c, y], elementwise=c - y)\n"),
     "name 'y' of the linear_ form of a Contrastive input is declared, or reserved"),
    ("contrastive-in-row-loss", "bad_loss",
     _spec("c = Contrastive('c_logps', queries='a', keys='b')\nspec = Loss(NAME, inputs=[c, y], row=RowSum(c - y), axis=-1)\n"),
     "Contrastive inputs are for elementwise losses"),
    # recurrence losses (Alignment): the step must be a sum over moves in the log semiring
    ("recurrence-no-emission", "bad_loss", _recurrence("logaddexp(a.previous(0), a.previous(1))"),
     "the step must be emission + logaddexp(...) of the moves"),
    ("recurrence-two-previous", "bad_loss", _recurrence("a.emission + a.previous(0) + a.previous(1)"),
     "each term of the step's logaddexp reads one previous(k)"),
    ("recurrence-product", "bad_loss", _recurrence("a.emission + logaddexp(2 * a.previous(0), a.previous(1))"),
     "a move is previous(k) plus a weight of the labels and parameters"),
    ("recurrence-condition-on-values", "bad_loss",
     _recurrence("a.emission + logaddexp(a.previous(0), Piecewise((a.previous(1), a.previous(0) > 0), (-oo, True)))"),
     "a move's condition reads labels and parameters alone"),
    ("recurrence-same-move-twice", "bad_loss", _recurrence("a.emission + logaddexp(a.previous(1), a.previous(1) - 1)"),
     "reads one previous state in two terms"),
    ("recurrence-too-far", "bad_loss", _recurrence("a.emission + logaddexp(a.previous(0), a.previous(9))"),
     "k must be an int in [0, 8]"),
    ("recurrence-stray-input", "bad_loss", _recurrence("a.emission + logaddexp(a.previous(0), a.previous(1)) + x"),
     "the step reads ['x']"),
    ("recurrence-bad-start", "bad_loss", _recurrence("a.emission + a.previous(0)", start="[-1]"),
     "start= states are ints counted from the first state"),
    ("recurrence-float-separator", "bad_loss",
     _recurrence("a.emission + a.previous(0)", separator='Param("blank", 0.5)'),
     "separator= must be an integer Param"),
    ("recurrence-other-inputs", "bad_loss", _recurrence("a.emission + a.previous(0)", inputs="[x]"),
     "inputs= are its Alignment's arrays, in order"),
    ("recurrence-with-elementwise", "bad_loss", _recurrence("a.emission + a.previous(0)", extra=", elementwise=x"),
     "a recurrence loss takes neither elementwise="),
]


def _specs_folder(tmp_path, file_name, source):
    folder = tmp_path / "specs"
    folder.mkdir()
    if VALID is not None:
        (folder / "mse_loss.py").write_text(VALID)
    (folder / f"{file_name}.py").write_text(source)
    return folder


@pytest.mark.parametrize("file_name,source,fragment", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_spec_is_one_line_naming_the_file_and_the_problem(tmp_path, file_name, source, fragment):
    folder = _specs_folder(tmp_path, file_name, source)
    with pytest.raises(SpecFileError) as raised:
        render_package(folder)
    message = str(raised.value)
    assert "\n" not in message
    assert f"{file_name}.py" in message, message
    assert fragment in message, message


def test_loss_names_that_differ_only_in_case_clash(tmp_path):
    """Two modules generated/Mse_loss.py and generated/mse_loss.py are one file on macOS."""
    folder = _specs_folder(tmp_path, "Mse_loss", PRELUDE + 'x = Input("x")\nspec = Loss("Mse_loss", inputs=[x], '
                                                          "elementwise=x**2)\n")
    with pytest.raises(SpecFileError, match="clashes with 'Mse_loss'|clashes with 'mse_loss'"):
        render_package(folder)


def test_spec_folder_must_exist_and_hold_specs(tmp_path):
    with pytest.raises(SpecFileError, match="is not a folder"):
        render_package(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecFileError, match="holds no spec files"):
        render_package(tmp_path / "empty")


def test_spec_path_that_would_break_the_generated_header_is_refused(tmp_path):
    folder = tmp_path / "specs\nimport os"
    folder.mkdir()
    (folder / "mse_loss.py").write_text(VALID or PRELUDE)
    with pytest.raises(SpecFileError, match="unprintable"):
        render_package(folder)


def test_generated_code_that_does_not_compile_is_never_returned(tmp_path, monkeypatch):
    """The last line of defence: render_package compiles each module before handing it over."""
    from generator.backends import mlx

    monkeypatch.setattr(mlx, "render", lambda *args: "def broken(:\n")
    folder = _specs_folder(tmp_path, "good_loss", _loss(name="good_loss"))
    with pytest.raises(SpecFileError, match="the generated good_loss.py does not compile"):
        render_package(folder)


# ------------------------------------------------------------ through the command line

CLI_CASES = ["python-error", "undeclared-symbol", "unsupported-function", "identifier", "keyword",
             "loss-name-not-file-name", "param-without-default", "floor"]


def _snapshot(folder):
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CLI_CASES)
def test_command_exits_non_zero_with_one_line_and_leaves_the_output_alone(tmp_path, case):
    _, file_name, source, fragment = next(c for c in CASES if c[0] == case)
    folder = _specs_folder(tmp_path, file_name, source)
    out = tmp_path / "generated"
    good = tmp_path / "good"
    good.mkdir()
    (good / "good_loss.py").write_text(_loss(name="good_loss"))
    write_package(render_package(good), out)
    before = _snapshot(out)
    siblings = sorted(p.name for p in tmp_path.iterdir())

    result = subprocess.run([sys.executable, "-m", "generator", "generate", "--specs", str(folder),
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode != 0
    assert len(lines) == 1, lines
    assert f"{file_name}.py" in lines[0] and fragment in lines[0], lines[0]
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings  # no staging folder left behind


# ------------------------------------------------------------ hostile but valid specs

CONTROL_TEXT = "No quotes, only bytes Python source cannot hold: \x00 \r \x1b[31m \u2028 \ud800 and \\ end"
HOSTILE_TEXT = (
    'Ends early? """ + __import__("os").system("echo pwned") + """\n'
    "Jinja: {{ 7 * 7 }} {% for i in range(3) %}{{ i }}{% endfor %} {# comment #}\n"
    "Backslashes \\n \\x41 \\N{BULLET} and a trailing one \\\n"
    "Control characters: \x00 \r \x1b[31m \u2028 end"
)


@pytest.mark.parametrize("text", [HOSTILE_TEXT, CONTROL_TEXT], ids=["quotes-and-jinja", "control-characters"])
def test_hostile_text_is_carried_verbatim_and_inert(tmp_path, text):
    source = PRELUDE + textwrap.dedent(f'''
        x = Input("x", doc={text!r})
        y = Input("y", doc="Targets.")
        d = Param("delta", 1.0, range="(0, inf)", doc={text!r})
        spec = Loss("hostile_loss", inputs=[x, y], params=[d], doc={text!r}, kinks={text!r},
                    elementwise=d * (x - y) ** 2)
    ''')
    package = build_package(tmp_path, {"hostile_loss": source})
    function = package.hostile_loss
    module = importlib.import_module(function.__module__)
    for piece in text.split("\n"):
        assert piece in function.__doc__, piece
    assert text in module.__doc__
    generated = Path(inspect.getsourcefile(module)).read_text(encoding="utf-8")
    tree = ast.parse(generated)
    # The text is only ever inside string literals: no code came out of it.
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert "system" not in attributes and not {"os", "__import__", "i", "range"} & names


def test_values_whose_repr_is_code_are_printed_as_plain_values(tmp_path):
    """An int subclass, a str subclass: the generated code holds their plain value, never their repr."""
    source = PRELUDE + textwrap.dedent('''
        class Evil(int):
            def __repr__(self):
                return "__import__('os').system('echo pwned')"

        class EvilText(str):
            def __repr__(self):
                return "__import__('os').system('echo pwned')"

        x, y = Input("x"), Input("y")
        d = Param("delta", Evil(2), range="[1, 5]")
        spec = Loss(EvilText("evil_loss"), inputs=[x, y], params=[d], reduction=EvilText("sum"),
                    elementwise=d * (x - y) ** 2)
    ''')
    package = build_package(tmp_path, {"evil_loss": source})
    text = Path(inspect.getsourcefile(importlib.import_module(package.evil_loss.__module__))).read_text()
    assert "__import__" not in text and "pwned" not in text
    assert "def evil_loss(x, y, delta=2, reduction='sum', *, group=None):" in text


def test_every_name_the_generated_code_uses_is_the_specs_or_reserved():
    """A new local in the template that a spec could also declare would be shadowed silently."""
    losses = load_specs(ROOT / "specs")
    for loss in losses:
        tree = ast.parse((ROOT / "generated" / f"{loss.name}.py").read_text())
        ours = {d.name for d in loss.declarations} | {t.name for t in collect_terms(loss.formula)} | {loss.name}
        ours |= {f"{t.name}_{s}" for t in loss.class_targets for s in ("index", "onehot")}
        ours |= {f"{p.name}_value" for p in loss.numeric_params if not p.integer}
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        used |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
        if not ours & HEAD_NAMES:  # a linear_ form's head takes these names where the spec has neither
            ours |= HEAD_NAMES
        if loss.sequences:  # their linear_ form's arguments, which such a spec may not declare
            ours |= SEQUENCE_FORM_NAMES | {f"{s.prefix}_{a}" for s in loss.sequences for a in ("hidden", "labels")}
        for c in loss.contrastives:  # their linear_ form's arguments: the embeddings and the scale
            ours |= {c.queries, c.keys} | ({c.scale.name} if c.scale is not None else set())
        ours.add(TEMPERATURE_NAME)  # a distillation form's, where the spec declares none
        unprotected = sorted(
            n for n in used - ours
            if not n.startswith("_") and n not in GENERATED_NAMES and not GENERATED_NAME_FORMS.fullmatch(n)
        )
        assert not unprotected, f"{loss.name}: spec names may shadow {unprotected}; reserve them in generator/spec/vocabulary.py"
        shadowable = {n for n in used - ours if hasattr(builtins, n)} - GENERATED_NAMES
        assert not shadowable, f"{loss.name}: builtins {shadowable} are used but not reserved"


def test_every_name_the_generated_kernels_use_is_the_specs_or_reserved():
    """Spec names are C++ variables in the Metal and CUDA kernels, renamed where C++ or the kernel reserves them.

    A kernel variable that is neither a (renamed) spec name nor reserved by
    generator/backends/gpu/printer.py is one a spec could declare: the two would clash.
    """
    import re

    own_forms = re.compile(r"losscc_\w*|acc_\w*|\w+_(in|out|index|valid)")
    for loss in load_specs(ROOT / "specs"):
        module = ROOT / "generated" / "kernels" / f"{loss.name}.py"
        if not module.exists():
            pytest.skip("no generated kernels")
        ours = {d.name for d in loss.declarations} | {t.name for t in collect_terms(loss.formula)}
        ours = {c_name(n) for n in ours}
        for source in re.findall(r'(?:metal|cuda)=r"""(.*?)"""', module.read_text(), flags=re.S):
            source = re.sub(r"//[^\n]*", "", source)  # comments
            used = set(re.findall(r"(?<![.:\w])[A-Za-z_]\w*", source))  # not members (a.x) or qualified (a::b)
            unprotected = sorted(
                n for n in used - ours
                if not n.startswith("_") and n not in KERNEL_NAMES | GENERATED_NAMES and not own_forms.fullmatch(n)
                and not GENERATED_NAME_FORMS.fullmatch(n)
            )
            assert not unprotected, f"{loss.name}: kernel variables a spec could also declare: {unprotected}"
        assert all(c_name(n) not in KERNEL_NAMES for n in ours)
