"""Human-readable text about a loss: formula, gradients, parameters.

Used for the generated docstrings, ``losscc show`` and the catalogue.
"""

from __future__ import annotations

import sympy as sp

from .ir import COTANGENT, ElementwiseIR
from .spec import functions as fn
from .spec.dag import is_large, tree_size
from .spec.terms import expand_terms
from .spec.vocabulary import ClassTarget, ClassWeights, Flag


def signature(loss):
    """(name, default or None) for each argument, in the public order.

    Keyword-only declarations come last, after a ``("*", None)`` marker. A
    recurrence loss takes torch's order (the arrays, the numbers, ``reduction``,
    the flags).
    """
    if loss.kind == "recurrence":
        args = [(i.name, None) for i in loss.inputs] + [(p.name, repr(p.default)) for p in loss.params if not isinstance(p, Flag)]
        args.append(("reduction", repr(loss.reduction)))
        args += [(p.name, repr(p.default)) for p in loss.params if isinstance(p, Flag)]
        return args + [("*", None), ("group", "None")]
    args = [(i.name, "None" if isinstance(i, ClassWeights) else None) for i in loss.inputs if not i.keyword_only]
    if loss.weights is not None:
        args.append((loss.weights.name, "None"))
    if loss.kind == "rowwise":
        args.append(("axis", repr(loss.axis)))
    for p in loss.params:
        if not p.keyword_only:
            args.append((p.name, repr(p.default)))
    args.append(("reduction", repr(loss.reduction)))
    keyword_only = [d for d in loss.inputs + loss.params if d.keyword_only]
    args.append(("*", None))
    args += [(d.name, "None" if isinstance(d, ClassWeights) else repr(d.default)) for d in keyword_only]
    args.append(("group", "None"))  # every loss's: the ranks whose elements a mean or sum is over
    if loss.kind == "rowwise":
        args.append(("class_group", "None"))  # the ranks the class axis is split across
    return args


def argument_docs(loss):
    """The ``Args:`` lines of the public function's docstring, one per argument."""
    if loss.kind == "recurrence":
        return _recurrence_argument_docs(loss)
    lines = []
    for item in loss.inputs:
        kind = "array"
        doc = item.doc or "An input."
        if isinstance(item, ClassTarget):
            kind = "array of int" + (" or float probabilities" if item.probabilities else "")
            doc += " A class index outside ``[0, classes)`` gives its row a NaN loss and NaN in its gradient."
        if isinstance(item, ClassWeights):
            kind = "array, optional"
        lines.append(f"{item.name} ({kind}): {doc}")
    if loss.weights is not None:
        lines.append(f"{loss.weights.name} (array, optional): {loss.weights.doc}")
    if loss.kind == "rowwise":
        lines.append(f"axis (int, optional): The axis the loss reduces along. Default: ``{loss.axis}``.")
    for p in loss.params:
        if isinstance(p, Flag):
            lines.append(f"{p.name} (bool, optional): {p.doc} Default: ``{p.default}``.")
        elif p.optional:
            kind = "int" if p.integer else "float"
            lines.append(f"{p.name} ({kind}, optional): {p.doc} Default: ``None`` (off).")
        elif p.integer:
            lines.append(f"{p.name} (int, optional): {p.doc} Must be in {p.range}. Default: ``{p.default}``.")
        else:
            lines.append(
                f"{p.name} (float or array, optional): {p.doc} Must be in {p.range}. Default: ``{p.default}``. "
                "A one-element array is differentiable and, as in MLX, not range-checked."
            )
    lines.append(
        "reduction (str, optional): Specifies the reduction to apply to the output: "
        f"``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'{loss.reduction}'``."
    )
    lines.append(
        "group (mx.distributed.Group, optional): Reduce over every rank of the group: ``'mean'`` is the "
        "mean of all ranks' elements (rows kept), ``'sum'`` their sum, and each rank's gradient is that "
        "global loss's in its own inputs. Default: ``None``, this process's elements alone."
    )
    if loss.kind == "rowwise":
        lines.append(
            "class_group (mx.distributed.Group, optional): The ranks across which the class axis is split: "
            "each holds its slice of every row (in rank order, of any size), the loss is that of the whole "
            "rows (the same on every rank) and the gradient this rank's slice of it. Default: ``None``."
        )
    return lines


def _recurrence_argument_docs(loss):
    recurrence = loss.recurrence
    lines = [f"{item.name} (array): {item.doc}" for item in loss.inputs]
    lines += [f"{p.name} ({'int' if p.integer else 'float'}, optional): {p.doc} Default: ``{p.default!r}``."
              for p in loss.params if not isinstance(p, Flag)]
    mean = ("``'mean'`` divides each sequence's loss by its number of labels (at least 1), then takes the mean"
            if recurrence.mean_per_label else "``'mean'`` is the mean over sequences")
    lines.append(f"reduction (str, optional): ``'none'`` | ``'mean'`` | ``'sum'``; {mean}. "
                 f"Default: ``'{loss.reduction}'``.")
    lines += [f"{p.name} (bool, optional): {p.doc} Default: ``{p.default!r}``."
              for p in loss.params if isinstance(p, Flag)]
    return lines + ["group (mx.distributed.Group, optional): Reduce over every rank of the group: ``'mean'`` and "
                    "``'sum'`` are those of all ranks' sequences, and each rank's gradient is that global loss's in "
                    "its own log-probabilities. Default: ``None``, this process's sequences alone."]


def recurrence_equations(lattice, latex, width=100):
    """The step of a recurrence loss (alpha) and the backward step the generator derived (beta), in LaTeX
    (``latex``) or as 2-D text ``width`` wide. ``recurrence_note`` says the rest."""
    at = lambda name, t, s: sp.Symbol(f"{name}_{{{t}}}({s})" if latex else f"{name}[{t}]({s})")
    state = lambda k: "s" if k == 0 else f"s - {k}" if k > 0 else f"s + {-k}"

    def labels(expr):
        return expr.xreplace({x: sp.Symbol(f"l({state(x.shift)})") for x in expr.free_symbols
                              if getattr(x, "role", None) == "label"})

    def moves_sum(moves, value, frame, emission):
        total = None
        for move in moves:
            term = at(value, frame, state(move.shift)) + labels(move.weight)
            term += at("e", frame, state(move.shift)) if emission else 0
            if move.condition != sp.true:
                term = sp.Piecewise((term, labels(move.condition)), (-sp.oo, True))
            total = term if total is None else fn.logaddexp(total, term)
        return total

    alpha, beta = (r"\alpha", r"\beta") if latex else ("alpha", "beta")
    equations = [(at(alpha, "t", "s"), at("e", "t", "s") + moves_sum(lattice.forward, alpha, "t-1", False)),
                 (at(beta, "t", "s"), moves_sum(lattice.backward, beta, "t+1", True))]
    if latex:
        return [f"{sp.latex(left)} = {sp.latex(right)}" for left, right in equations]
    return [sp.pretty(sp.Eq(left, right, evaluate=False), num_columns=width) for left, right in equations]


def recurrence_note(lattice):
    """What the equations of ``recurrence_equations`` leave to words."""
    return (f"e_t(s) is the log-probability at frame t of the class l(s) of state s. Paths start at the states "
            f"{list(lattice.start)} at the first frame and end at the states {list(lattice.end)} (counted from "
            "the last) at the last; the loss is minus the log of the sum of alpha over the end states at the last "
            "frame. beta (the paths from s to an end, e_t(s) left out) is derived by the generator, the step's "
            "moves transposed; the gradient in e_t(s) is minus the posterior exp(alpha_t(s) + beta_t(s) - log "
            "total), summed into the class of s.")


def _latex(expr):
    """``expr`` in LaTeX, or a note where it is too long to read (a deeply nested formula's gradient)."""
    if is_large(expr):
        return rf"\text{{(an expression of {tree_size(expr)} terms: see the generated backward)}}"
    return sp.latex(expr)


def gradient_lines(loss, variant):
    """LaTeX lines ``d loss / d input = ...`` (per unit cotangent)."""
    ir = variant.ir
    unit = {COTANGENT: 1}
    if isinstance(ir, ElementwiseIR):
        return [
            rf"\frac{{\partial \ell}}{{\partial {sp.latex(sp.Symbol(n))}}} = {_latex(e.xreplace(unit))}"
            for n, e in ir.gradients.items()
        ]
    lines = [rf"{sp.latex(s)} = {_latex(e.xreplace(unit))}" for s, e in ir.adjoints]
    lines += [
        rf"\frac{{\partial \ell}}{{\partial {sp.latex(sp.Symbol(n))}_j}} = {_latex(e.xreplace(unit))}"
        for n, e in ir.element_gradients.items()
    ]
    lines += [
        rf"\frac{{\partial \ell}}{{\partial {sp.latex(sp.Symbol(n))}}} = {_latex(e.xreplace(unit))}"
        for n, e in ir.row_gradients.items()
    ]
    return lines


def formula_lines(loss, variant):
    """LaTeX lines of the loss: each row reduction, then the loss."""
    ir = variant.ir
    if isinstance(ir, ElementwiseIR):
        return [rf"\ell = {_latex(ir.loss)}"]
    lines = [rf"{sp.latex(r.symbol)} = \mathrm{{{r.kind}}}_j\left({_latex(r.argument)}\right)" for r in ir.forward_reductions]
    return lines + [rf"\ell = {_latex(ir.loss)}"]


def variant_title(variant):
    """The flag values of ``variant``, ``flag=True, ...`` (empty without flags)."""
    return ", ".join(f"{k}={v}" for k, v in variant.flags.items())


def kinks_text(loss):
    """What the docs say of the loss's kinks: the spec's words, else where its formula has them, else smooth."""
    if loss.kinks.strip():
        return loss.kinks.strip()
    formula = expand_terms(loss.formula).replace(lambda e: isinstance(e, fn.Select), lambda e: e.args[1] + e.args[2])
    arrays, places = set(loss.inputs), []
    for node in sp.preorder_traversal(formula):
        if isinstance(node, sp.Piecewise):
            places += [str(condition) for _, condition in node.args[:-1] if condition.free_symbols & arrays]
        elif isinstance(node, (sp.Abs, sp.sign)) and node.args[0].free_symbols & arrays:
            places.append(f"{node.args[0]} = 0")
    places = list(dict.fromkeys(places))  # in order, once each
    if not places:
        return "None: the loss is smooth where it is defined."
    return ("Not documented by the spec (no kinks=); the formula switches branches where "
            + "; ".join(places) + ".")
