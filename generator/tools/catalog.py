"""The loss catalogue: what ``losscc list``, ``show`` and ``doc`` say about each loss.

Everything here is read off the specs (``generator.spec.load``), their derivation
(``generator.derive``) and the docstring text (``generator.describe``), so the
catalogue covers whatever specs exist. ``build`` writes one Markdown page per
loss (formula and gradient in LaTeX, parameters, a PNG plot of the loss and
its gradient) and an index table; the plots evaluate the package rendered from
the same specs, so they show the code users import.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

import sympy as sp

from .. import describe
from ..backends.gpu import traffic
from ..derive import derive
from ..ir import COTANGENT, ElementwiseIR
from ..render import render_package, write_folder, write_package
from ..spec.load import load_spec, spec_paths
from ..spec.terms import collect_terms
from ..spec.vocabulary import ClassTarget

MARKER = "<!-- Loss catalogue built by `losscc doc` (make docs). Do not edit: it is rebuilt from specs/. -->"

ROWWISE_NOTE = (
    "Row reductions run along `axis` over the elements $j$ of a row; `row_length` is the number of "
    "elements in a row and `d_R` is the derivative of the row loss with respect to the reduction `R`. "
    "A class target stands for the one-hot row of its class (or for the row of probabilities)."
)


# ---------------------------------------------------------------- summaries

def backends(loss):
    """The backends the generated code of ``loss`` runs on: MLX ops, and its Metal and CUDA kernels."""
    return ["mlx", "metal", "cuda"]


def inputs_text(loss):
    """The array arguments; [optional] ones (default None) in brackets."""
    optional = {name for name, default in describe.signature(loss) if default == "None"}
    arrays = list(loss.inputs) + ([loss.weights] if loss.weights is not None else [])
    names = [f"{a.name} (class)" if isinstance(a, ClassTarget) else a.name for a in arrays]
    return ", ".join(f"[{n}]" if a.name in optional else n for a, n in zip(arrays, names))


def parameters_text(loss):
    """The parameters with their defaults, ``delta=1.0, ...``."""
    return ", ".join(f"{p.name}={p.default!r}" for p in loss.params)


def summary(loss):
    """One row of ``losscc list`` and of the catalogue index, column name -> text.

    A column added here shows in both (the place for a per-loss figure such as
    the memory traffic of a kernel).
    """
    return {
        "name": loss.name,
        "kind": loss.kind,
        "inputs": inputs_text(loss),
        "parameters": parameters_text(loss),
        "backends": ", ".join(backends(loss)),
        "traffic (GPU)": "frames in one launch" if loss.kind == "recurrence" else traffic.summary(loss),
    }


def call_signature(loss):
    """The public function's signature as a call, ``huber_loss(inputs, targets, delta=1.0, ...)``."""
    args = ", ".join(name if default is None else f"{name}={default}" for name, default in describe.signature(loss))
    return f"{loss.name}({args})"


def mlx_twin(loss):
    """``mlx.nn.losses.<name>`` when MLX has a loss of the same name."""
    import mlx.nn.losses

    return f"mlx.nn.losses.{loss.name}" if callable(getattr(mlx.nn.losses, loss.name, None)) else None


# ---------------------------------------------------------------- formulas

def latex_lines(loss, variant):
    """The formula (named terms first) and derived gradient of one variant, one LaTeX equation a line."""
    definitions = [rf"{sp.latex(t)} = {sp.latex(t.definition)}" for t in collect_terms(loss.formula)]
    return definitions + describe.formula_lines(loss, variant), describe.gradient_lines(loss, variant)


def pretty_lines(loss, variant, width=100):
    """The formula and derived gradient of one variant as 2-D Unicode text blocks."""
    def equation(left, right):
        return sp.pretty(sp.Eq(sp.Symbol(left), right, evaluate=False), num_columns=width)

    unit = {COTANGENT: 1}
    ir = variant.ir
    formula = [equation(t.name, t.definition) for t in collect_terms(loss.formula)]
    if isinstance(ir, ElementwiseIR):
        formula.append(equation("loss", ir.loss))
        gradient = [equation(f"d loss/d {n}", e.xreplace(unit)) for n, e in ir.gradients.items()]
        return formula, gradient
    for reduction in ir.forward_reductions:
        formula.append(f"{reduction.symbol} = {reduction.kind} over j of " + sp.pretty(reduction.argument, num_columns=width))
    formula.append(equation("loss", ir.loss))
    gradient = [equation(s.name, e.xreplace(unit)) for s, e in ir.adjoints]
    gradient += [equation(f"d loss/d {n}_j", e.xreplace(unit)) for n, e in ir.element_gradients.items()]
    gradient += [equation(f"d loss/d {n}", e.xreplace(unit)) for n, e in ir.row_gradients.items()]
    return formula, gradient


# ---------------------------------------------------------------- Markdown

def _math(lines):
    """One display block per equation (GitHub renders a ```math block as one equation)."""
    return [part for line in lines for part in ("```math", line, "```", "")]


def _link(path, out):
    """A link from the catalogue folder ``out`` to the file ``path``, relative (the project moves as one)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(out).resolve())).as_posix()


def page(loss, variants, curve, out, spec_dir):
    """The Markdown page of one loss (its spec in ``spec_dir``); ``variants`` are ``derive(loss)``'s (a recurrence
    loss's: its lattice)."""
    lines = [MARKER, "", f"# {loss.name}", "", loss.doc.strip(), ""]
    lines += [f"```python\n{call_signature(loss)}\n```", ""]
    facts = [f"**{loss.kind}** loss", f"spec [`{loss.source}`]({_link(Path(spec_dir, f'{loss.name}.py'), out)})"]
    module = Path(spec_dir).resolve().parent / "generated" / f"{loss.name}.py"  # where `losscc generate` puts it
    if module.is_file():
        facts.append(f"generated [`generated/{loss.name}.py`]({_link(module, out)})")
    facts.append("backends: " + ", ".join(backends(loss)))
    twin = mlx_twin(loss)
    if twin:
        facts.append(f"drop-in for `{twin}`")
    lines += [" · ".join(facts), ""]
    if loss.kind == "recurrence":
        forward, backward = describe.recurrence_equations(variants, latex=True)
        lines += ["## Formula", "", "The spec's step (log space):", ""] + _math([forward])
        lines += ["## Gradient", "", "The backward step, derived by the generator:", ""] + _math([backward])
        lines += [describe.recurrence_note(variants), ""]
    for variant in variants if loss.kind != "recurrence" else ():
        title = describe.variant_title(variant)
        suffix = f" ({title})" if title else ""
        formula, gradient = latex_lines(loss, variant)
        lines += [f"## Formula{suffix}", ""] + _math(formula)
        lines += [f"## Gradient{suffix}", "", "Derived symbolically, per unit cotangent:", ""] + _math(gradient)
    if loss.kind == "rowwise":
        lines += [ROWWISE_NOTE, ""]
    lines += ["## Kinks", "", describe.kinks_text(loss), ""]
    lines += ["## Arguments", ""] + [f"- {line}" for line in describe.argument_docs(loss)] + [""]
    held = "; ".join(curve.held)
    lines += ["## Plot", "", f"![{loss.name}: loss and gradient]({loss.name}.png)", ""]
    lines += [f"The loss (`reduction='none'`) and its gradient with respect to `{curve.wrt}`, "
              f"against `{curve.x_label}`" + (f"; {held}." if held else "."), ""]
    return "\n".join(lines)


def index(losses, out):
    """The Markdown index: one table row per loss, linking to its page."""
    columns = list(summary(losses[0])) + ["description"]
    lines = [MARKER, "", "# Loss catalogue", ""]
    lines += [f"{len(losses)} losses compiled from [`specs/`]({_link('specs', out)}). Each page gives the "
              "formula, the symbolically derived gradient, the kink convention, the arguments and a plot.", ""]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for loss in losses:
        row = summary(loss)
        row["name"] = f"[`{loss.name}`]({loss.name}.md)"
        row["description"] = loss.doc.strip().splitlines()[0] if loss.doc.strip() else ""
        lines.append("| " + " | ".join(row[c].replace("|", r"\|") for c in columns) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- building

@contextmanager
def imported_package(files):
    """Write rendered package ``files`` to a temporary folder and import it under a fresh name."""
    name = f"_losscc_catalogue_{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch, name)
        write_package(files, folder)
        module_spec = importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
            yield module
        finally:
            for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
                del sys.modules[key]


def _check_replaceable(out):
    """Refuse to replace a folder that is not a catalogue (a typo in --out must not delete work)."""
    if not out.exists() or not any(out.iterdir()):
        return
    marker = out / "index.md"
    if not (marker.is_file() and marker.read_text().startswith(MARKER)):
        raise ValueError(f"{out} exists and is not a catalogue built by losscc; choose an empty or new folder")


def build(spec_dir, out, progress=None):
    """Build the catalogue of every spec in ``spec_dir`` into the folder ``out``.

    ``progress(step)`` is called after each of the 2 steps per loss (render, page).
    Returns the loss names, in index order.
    """
    from . import plots  # numpy and matplotlib are only needed here

    out = Path(out).resolve()
    _check_replaceable(out)
    step = progress or (lambda _: None)
    losses = [load_spec(path) for path in spec_paths(spec_dir)]
    if not losses:
        raise ValueError(f"{spec_dir} has no spec files")
    files = {}
    package_files = render_package(spec_dir, progress=lambda name: step(f"rendered {name}"))
    with imported_package(package_files) as package:
        for loss in losses:
            curve = plots.curve(loss, getattr(package, loss.name))
            files[f"{loss.name}.png"] = plots.figure_png(loss.name, curve)
            files[f"{loss.name}.md"] = page(loss, derive(loss), curve, out, spec_dir)
            step(f"plotted {loss.name}")
    files["index.md"] = index(losses, out)
    write_folder(files, out, _check_replaceable)
    return [loss.name for loss in losses]

