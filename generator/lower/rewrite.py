"""Rewrites that make the lowered code cheaper, applied before CSE.

Each rewrite keeps the value (and, where the code is differentiated no
further, is exact): it only changes how many operations on whole arrays the
printed code takes and whether a selection is a branch. Under
``mx.value_and_grad`` every operation is a separate pass and (often) a fresh
buffer, because MLX runs compiled functions uncompiled on traced inputs; in a
compiled kernel a selection between computed values is a mispredicted branch.
"""

from __future__ import annotations

import sympy as sp

from ..spec.dag import dag_map, is_large
from ..spec.terms import expand_terms
from ..spec.vocabulary import Param, Term

_BOUNDS = (sp.StrictLessThan, sp.LessThan, sp.StrictGreaterThan, sp.GreaterThan)


def cheaper(expr, finite):
    """``expr`` rewritten; ``finite`` are the symbols that are finite wherever the inputs are."""
    rewrite = lambda e: _saturation(e) or _quadratic_then_linear(e) or _mask(e, finite) or e
    if is_large(expr):  # the rewrites node by node (powers left as they are): SymPy's passes walk the whole tree
        expr = dag_map(expr, lambda e: rewrite(e) if _is_selection(e) else e)
        return dag_map(expr, lambda e: sp.gcd_terms(e, fraction=False) if e.is_Add else e)
    expr = sp.powsimp(expr)
    expr = expr.replace(_is_selection, rewrite)
    return sp.factor_terms(expr)


def finite_symbols(definitions, inputs):
    """The defined symbols finite wherever ``inputs`` (symbols, assumed finite) are.

    ``definitions`` maps a symbol to an expression or a row reduction; a
    reduction is finite when its argument is.
    """
    finite = set(inputs)
    changed = True
    while changed:
        changed = False
        for symbol, definition in definitions.items():
            expr = getattr(definition, "argument", definition)
            if symbol not in finite and is_finite(expr, finite):
                finite.add(symbol)
                changed = True
    return finite


def is_finite(expr, finite):
    """Built from finite symbols by +, *, non-negative integer powers, |.|, sign and selections."""
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Symbol):
            if node not in finite and not (isinstance(node, Term) and is_finite(node.definition, finite)):
                return False
        elif isinstance(node, sp.Pow):
            if not (node.exp.is_Integer and node.exp >= 0):
                return False
        elif not isinstance(node, (sp.Add, sp.Mul, sp.Number, sp.Abs, sp.sign, sp.Piecewise, sp.Max, sp.Min, sp.functions.elementary.piecewise.ExprCondPair,
                                   sp.core.relational.Relational, sp.logic.boolalg.Boolean)):
            return False
    return True


def _is_selection(expr):
    return isinstance(expr, sp.Piecewise) and len(expr.args) == 2 and expr.args[1][1] == sp.true


def _bound(condition):
    """``(u, a)`` for a condition ``|u| <= a`` (or ``<``, or written the other way round), else None."""
    if not isinstance(condition, _BOUNDS):
        return None
    small, large = (condition.lhs, condition.rhs) if isinstance(condition, _BOUNDS[:2]) else (condition.rhs, condition.lhs)
    small = expand_terms(small)
    if not isinstance(small, sp.Abs) or large.free_symbols & small.free_symbols:
        return None
    return small.args[0], large


def _quadratic_then_linear(selection):
    """``k*u**2`` where ``|u|`` is below ``a``, continued linearly beyond: ``k*m*(2|u| - m)``, ``m = min(|u|, a)``.

    The Huber family (Huber, smooth L1): one minimum instead of a selection
    between two computed branches (a branch per element when compiled).
    """
    (inside, condition), (outside, _) = selection.args
    bound = _bound(condition)
    if bound is None:
        return None
    u, a = bound
    inside, outside = expand_terms(inside), expand_terms(outside)
    k = sp.simplify(inside / u**2)
    if k.free_symbols & u.free_symbols or k == 0:
        return None
    if sp.simplify(outside - (2 * k * a * sp.Abs(u) - k * a**2)) != 0:
        return None
    m = sp.Min(sp.Abs(u), a)
    return _guarded(k * m * (2 * sp.Abs(u) - m), selection, sp.denom(k))


def _saturation(selection):
    """``f(u)`` where ``|u|`` is below ``a``, else ``f(a*sign(u))``: that is ``f(clip(u, -a, a))``.

    The gradients of Huber-like losses take this form; the clip is two
    comparisons without a branch, the selection a branch per element.
    """
    (inside, condition), (outside, _) = selection.args
    bound = _bound(condition)
    if bound is None:
        return None
    u, large = bound
    # Write both branches as functions of u alone: solve u for a symbol it is linear in.
    linear = [s for s in u.free_symbols if sp.diff(u, s).is_number and sp.diff(u, s) != 0]
    if not linear:
        return None
    symbol, at = linear[0], sp.Dummy("u", real=True)
    solved = sp.solve(u - at, symbol)[0]
    inside, outside = (sp.simplify(expand_terms(e).subs(symbol, solved)) for e in (inside, outside))
    if sp.simplify(inside.subs(at, large * sp.sign(at)) - outside) != 0:
        return None
    return _guarded(inside.subs(at, sp.Min(sp.Max(u, -large), large)), selection, sp.denom(sp.together(inside)))

def _mask(selection, finite):
    """``value`` where ``c`` holds, else 0: ``value * [c]`` when ``value`` is finite.

    A 0/1 mask can be shared and multiplied without a branch; ``0 * value``
    is 0 as long as ``value`` is finite (MLX's own autodiff multiplies by such masks).
    """
    if extremum(selection) is not None:
        return None  # max(u, 0): one mx.maximum, NaN-propagating like MLX's losses
    (first, condition), (second, _) = selection.args
    if second != 0 and first == 0 and isinstance(condition, sp.core.relational.Relational):
        first, condition, second = second, condition.negated, 0
    if second != 0 or first == 1 or not is_finite(first, finite):
        return None
    return first * sp.Piecewise((1, condition), (0, True))


def extremum(selection, conditions=None):
    """``("max", a, b)`` for ``Piecewise((a, a > b), (b, True))``; min alike; else None.

    ``conditions`` maps a temporary holding a comparison to the comparison. At a
    tie both branches have the same value.
    """
    if len(selection.args) != 2:
        return None
    (first, condition), (second, _) = selection.args
    condition = (conditions or {}).get(condition, condition)
    if not isinstance(condition, _BOUNDS):
        return None
    larger = condition.lhs - condition.rhs  # positive where the condition holds
    if isinstance(condition, _BOUNDS[:2]):
        larger = -larger
    if sp.expand(larger - (first - second)) == 0:
        return "max", first, second
    if sp.expand(larger + (first - second)) == 0:
        return "min", first, second
    return None


def _guarded(rewritten, selection, denominator):
    """``rewritten``, or where it divides by a parameter that may be 0, the original at 0 then.

    ``Piecewise((rewritten, beta != 0), (selection at beta = 0, True))``: the
    condition is on a parameter alone, so the printed code picks one branch in
    Python (smooth L1 at beta = 0 is the L1 loss, not 0/0).
    """
    if _nonzero(denominator):
        return rewritten
    risky = [s for s in denominator.free_symbols if not _nonzero(s)]
    if len(risky) != 1 or not isinstance(risky[0], Param):
        return None
    at_zero = expand_terms(selection).subs(risky[0], 0)
    if at_zero.has(sp.zoo, sp.nan, sp.oo, -sp.oo) or isinstance(at_zero, sp.Piecewise):
        return None
    return sp.Piecewise((rewritten, sp.Ne(risky[0], 0)), (at_zero, True))


def _nonzero(expr):
    """Nonzero for every allowed parameter value: numbers and parameters whose range excludes 0."""
    for factor in sp.Mul.make_args(expr):
        base = factor.as_base_exp()[0]
        if base.is_Number and base != 0:
            continue
        if isinstance(base, Param) and (base.range.low > 0 or (base.range.low == 0 and base.range.low_open)):
            continue
        return False
    return True
