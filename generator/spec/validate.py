"""Validation of a spec's formula: only what every backend can print and differentiate.

The declarations check themselves as a spec builds them (``vocabulary``);
here the formula as a whole is checked against the loss that holds it:
every construct on a whitelist, every symbol declared, names distinct,
selections on flags, reductions where the loss's shape allows them.
Each problem is a :class:`SpecError` the loader reports against the file.
"""

from __future__ import annotations

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from . import functions as fn
from .terms import collect_terms
from .vocabulary import ROW_REDUCTIONS, ClassTarget, Flag, Gather, Param, SpecError, is_element_level

# Functions a formula may use; every backend printer knows each of them.
ALLOWED_FUNCTIONS = (
    sp.exp, sp.log, sp.Abs, sp.sign, sp.tanh, sp.cosh, sp.sinh, sp.sin, sp.cos, sp.atan, sp.erf,
    sp.Piecewise, log1p, expm1, fn.sigmoid, fn.softplus, fn.logaddexp, fn.logcosh, fn.Select,
) + ROW_REDUCTIONS

# ITE(c, a, b) appears when SymPy folds a Piecewise into a condition (relu(minimum(...)) > 0)
_BOOLEANS = (sp.core.relational.Relational, sp.And, sp.Or, sp.Not, sp.ITE, sp.logic.boolalg.BooleanAtom)
_NON_DIFFERENTIABLE = (
    sp.floor, sp.ceiling, sp.frac, sp.Mod, sp.Heaviside, sp.DiracDelta, sp.Max, sp.Min, sp.re, sp.im, sp.arg,
)


def check_constructs(expr):
    """Refuse anything the backends cannot print or differentiate (a whitelist).

    Symbols pass here; that a formula's symbols are declared is checked by
    ``check_formula``.
    """

    seen = set()  # (node, condition) pairs already checked: a shared subexpression is checked once

    def visit(node, condition):
        if (node, condition) in seen:
            return
        seen.add((node, condition))
        if isinstance(node, sp.Symbol):
            return
        if isinstance(node, sp.Number):
            if not (node.is_real and node.is_finite):
                raise SpecError(f"the number {node} is not a finite real number")
            return
        if node in (sp.pi, sp.E):
            return
        if isinstance(node, _BOOLEANS):
            if not condition:
                raise SpecError(f"the comparison or logic {node} may only be a Piecewise condition")
            for arg in node.args:
                visit(arg, isinstance(node, (sp.And, sp.Or, sp.Not, sp.ITE)))
            return
        if condition:
            raise SpecError(f"{node} is not a condition (a comparison such as x > 0)")
        if isinstance(node, sp.Piecewise):
            if node.args[-1].cond != sp.true:
                raise SpecError(f"Piecewise {node} needs a last branch (value, True) for the remaining cases")
            for value, cond in node.args:
                visit(value, False)
                visit(cond, True)
            return
        if isinstance(node, _NON_DIFFERENTIABLE):
            hint = {
                "Max": "; use maximum(a, b) (MLX's tie convention: the gradient at a tie goes to b) or a Piecewise",
                "Min": "; use minimum(a, b) (MLX's tie convention: the gradient at a tie goes to b) or a Piecewise",
                "Heaviside": "; write the step as a Piecewise",
            }.get(type(node).__name__, "")
            raise SpecError(f"{type(node).__name__} has no gradient rule here{hint}")
        if isinstance(node, sp.Function):
            if not isinstance(node, ALLOWED_FUNCTIONS):
                raise SpecError(
                    f"function {type(node).__name__!r} is not supported (the backends print and differentiate only: "
                    + ", ".join(sorted(f.__name__ for f in ALLOWED_FUNCTIONS)) + ")"
                )
        elif not isinstance(node, (sp.Add, sp.Mul, sp.Pow)):
            raise SpecError(f"{type(node).__name__} ({node}) is not supported in a loss formula")
        for arg in node.args:
            visit(arg, False)

    visit(expr, False)


def check_formula(loss, formula):
    """Raise a :class:`SpecError` for the first problem of ``formula`` (``loss``'s, terms expanded)."""
    check_constructs(formula)
    _check_symbols(loss, formula)
    _check_term_names(loss)
    _check_selections(loss, formula)
    _check_shape(loss, formula)


def _check_symbols(loss, formula):
    declared = set(loss.declarations)
    for symbol in formula.free_symbols:
        if symbol not in declared:
            raise SpecError(f"symbol {symbol.name!r} is used in the formula but not declared in inputs or params")
        if symbol is loss.weights:
            raise SpecError(f"weights {symbol.name!r} are applied by the generator; leave them out of the formula")
        if isinstance(symbol, Param) and symbol.optional:
            raise SpecError(
                f"parameter {symbol.name!r} has no default value (None), so the formula cannot use it; "
                "an optional parameter can only be a ClassTarget's ignore_index"
            )


def _check_term_names(loss):
    names = {d.name for d in loss.declarations}
    for term in collect_terms(loss.formula):
        if term.name in names:
            raise SpecError(f"term name {term.name!r} is already used by another term or declaration")
        names.add(term.name)


def _check_selections(loss, formula):
    """Select picks on a Flag, Gather at a ClassTarget, and a flag appears nowhere else."""
    for node in sp.preorder_traversal(formula):
        if isinstance(node, fn.Select) and not isinstance(node.args[0], Flag):
            raise SpecError(f"Select's first argument must be a Flag, got {node.args[0]}")
        if isinstance(node, Gather) and not isinstance(node.args[1], ClassTarget):
            raise SpecError(f"Gather's second argument must be a ClassTarget, got {node.args[1]}")
    outside = formula.replace(lambda e: isinstance(e, fn.Select), lambda e: e.args[1] + e.args[2])
    for flag in loss.flags:
        if flag in outside.free_symbols:
            raise SpecError(f"flag {flag.name!r} may only appear as Select({flag.name}, if_true, if_false)")


def _check_shape(loss, formula):
    """Row reductions in a row-wise loss only, and element inputs only inside them."""
    reductions = [n for n in sp.preorder_traversal(formula) if isinstance(n, ROW_REDUCTIONS)]
    if loss.kind == "elementwise":
        if reductions:
            raise SpecError(f"{type(reductions[0]).__name__} is a row reduction: declare the loss with row= and axis=")
        if loss.class_targets:
            raise SpecError("class targets need a row-wise loss (row= and axis=)")
        for item in loss.inputs:
            if item.per_row:
                raise SpecError(f"input {item.name!r} is per_row but the loss is elementwise")
        return
    outside = formula.replace(lambda e: isinstance(e, ROW_REDUCTIONS), lambda e: sp.Integer(0))
    for symbol in outside.free_symbols:
        if is_element_level(symbol):
            raise SpecError(
                f"element input {symbol.name!r} is used outside a row reduction; "
                "wrap it in RowSum, RowMean, RowMax, LogSumExp or Gather"
            )
    if not reductions:
        raise SpecError("a row-wise loss needs at least one row reduction (RowSum, LogSumExp, Gather, ...)")
