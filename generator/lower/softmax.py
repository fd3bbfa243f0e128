"""The softmax as every backend computes it: each logsumexp spelled out, the backward's weights read from its sum.

The MLX path and the kernels print the same statements, so a softmax weight has the same
rounding on every backend: ``e / s`` with ``e = exp(g - max g)`` and ``s = sum e`` (exact
where the row's values are equal), not ``exp(g - logsumexp)`` on one and ``e / s`` on another.

``running``: the backend has a one-pass logsumexp (the kernels' running maximum and sum). It
keeps it for a row that needs its own maximum, which spelled out would read the row once more;
a row moved by its shift (``z - shift(z)``, the logits' softmax) needs none, and is spelled out.
"""

from __future__ import annotations

import sympy as sp

from ..ir import Reduction
from ..spec.terms import expand_terms
from .schedule import Statement


def logsumexp_parts(symbol):
    """The symbols of a logsumexp's ``e = exp(g - max g)`` (element-level) and ``s = sum e``."""
    return sp.Symbol(f"{symbol.name}_exp", real=True), sp.Symbol(f"{symbol.name}_sum", real=True)


def _moved_by_shift(forward_reductions):
    """The logsumexps of a row moved by its shift (``z - shift(z)``): they need no maximum of their own."""
    shifts = {r.symbol: expand_terms(r.argument) for r in forward_reductions if r.kind == "shift"}
    return {r.symbol for r in forward_reductions if r.kind == "logsumexp"
            and any(expand_terms(r.argument) == z - shift for shift, z in shifts.items())}


def spelled_out(forward_reductions, running=False):
    """The logsumexps the forward spells out: all, or (``running``) those of a row moved by its shift."""
    moved = _moved_by_shift(forward_reductions)
    return [r for r in forward_reductions if r.kind == "logsumexp" and (r.symbol in moved or not running)]


def logsumexp_numerators(forward_reductions, running=False):
    """The element-level ``e`` of each logsumexp the forward spells out."""
    return [logsumexp_parts(r.symbol)[0] for r in spelled_out(forward_reductions, running)]


def logsumexp_spelled_out(statements, forward_reductions, running=False):
    """Each logsumexp that ``spelled_out`` names as every backend computes it, ``max + log(sum(exp(g - max)))``,
    in statements of its own.

    A row whose maximum is infinite is shifted by 0 instead (the row's shift):
    its logsumexp is then +-inf (or NaN) as it should be, not NaN from inf -
    inf. An argument already moved by its row's shift (``z - shift(z)``) needs
    no maximum of its own: it is at most 0, and 0 somewhere, in a finite row.
    ``e`` and ``s`` are what the backward's softmax reads (``softmax_read_from_sums``).
    """
    named = {r.symbol for r in spelled_out(forward_reductions, running)}
    moved = _moved_by_shift(forward_reductions)
    spelled = []
    for statement in statements:
        if statement.reduction is None or statement.symbol not in named:
            spelled.append(statement)
            continue
        name, argument = statement.symbol, statement.expr
        exps, sums = logsumexp_parts(name)
        if name in moved:
            spelled.append(Statement(exps, sp.exp(argument)))
            most = sp.S.Zero
        else:
            most = sp.Symbol(f"{name.name}_max", real=True)
            spelled += [Statement(most, argument, Reduction(most, "shift", argument)),
                        Statement(exps, sp.exp(argument - most))]
        spelled += [Statement(sums, exps, Reduction(sums, "sum", exps)), Statement(name, most + sp.log(sums))]
    return spelled


def softmax_read_from_sums(forward_reductions, running=False):
    """``exp(g - logsumexp(g))`` -> ``e / s`` with the forward's ``e = exp(g - max g)`` and ``s = sum e``.

    The forward computes (and materializes) ``e`` for its sum anyway; the
    backward then needs no exponential of its own. In a row of -inf, ``s = 0``
    and every ``e = 0``: its weights are 0/0, NaN, as ``exp(g - logsumexp(g))``
    (an ignored row is masked after, see ``lower.safety.masked_rows``).
    """
    replacements = {}
    for reduction in spelled_out(forward_reductions, running):
        exps, sums = logsumexp_parts(reduction.symbol)
        replacements[sp.exp(reduction.argument - reduction.symbol)] = exps / sums
    return replacements
