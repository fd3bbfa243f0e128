"""Row-wise formulas in shifted coordinates: the reductions of a row taken relative to its maximum.

Written as it reads, cross entropy ``logsumexp(z) - z_t`` is computed as
``(max + log(sum)) - z_t``: the maximum cancels, and with it ``log(sum)``
once the logits share a large offset (at 1e8 a loss of log 2 becomes 0). For
an element input ``z``, let ``m`` be the row's shift (its maximum, or 0 where
that is not finite) and ``z = z' + m``. In each reduction's argument ``m``
then cancels (``margin - z_t + z_j``, ``z - logsumexp(z)``) or comes out of
the reduction (``logsumexp(z + h) = m + logsumexp(z' + h)``; times the row's
length for a sum), and where the offsets taken out cancel in the row's
formula, the loss is computed from ``z' = z - m`` alone. An input whose
offset does not cancel (the loss depends on it) is left as written. The loss
does not depend on ``m``, so its derivative is never taken: derivation holds
it constant, which is exact. A term that truly depends on it (cross
entropy's z-loss ``logsumexp(z)**2``, now ``(m + logsumexp(z'))**2``) keeps it.
"""

from __future__ import annotations

import sympy as sp

from .ir import ROW_LENGTH, Reduction
from .spec.vocabulary import ROW_REDUCTIONS, Input, RowSum, Term, is_element_level


def shift_rows(loss, formula):
    """``(formula, shifts, terms)``: ``formula`` (a row-wise loss's, terms expanded) in shifted coordinates.

    ``shifts`` are the ``shift`` reductions the formula now reads, to be
    computed before any other reduction; ``terms`` name each shifted input
    (``shifted0 = logits - shift0``), for the derived expressions to read it
    as one value (``logits - shift0 - gather0`` would round ``logits - gather0``
    first). None of either where no input's offset cancels, and then
    ``formula`` comes back as it was. The formula holds the terms expanded.
    """
    shifts, terms = [], []
    for item in loss.inputs:
        if not (isinstance(item, Input) and is_element_level(item)) or not formula.has(item):
            continue
        shift = sp.Symbol(f"shift{len(shifts)}", real=True)
        shifted = _shifted(formula, item, shift)
        if shifted is not None:
            formula = shifted
            terms.append(Term.generated(f"shifted{len(shifts)}", item - shift))
            shifts.append(Reduction(shift, "shift", item))
    return formula, shifts, terms


def _shifted(formula, item, shift):
    """``formula`` with ``item`` shifted by ``shift``, or None where the offset does not cancel."""
    offset = sp.Dummy("offset", real=True)  # the shift, while it is taken out of the reductions
    relative = sp.Dummy(f"{item.name}_shifted", real=True)  # item - shift
    rewritten = formula.replace(lambda e: isinstance(e, ROW_REDUCTIONS),
                                lambda e: _take_out(e, item, relative, offset))
    if not rewritten.has(relative):
        return None  # no reduction could be shifted
    cancelled = _cancel(rewritten, offset)
    if cancelled is None and rewritten.has(offset):
        return None  # the loss moves with the offset: computing it shifted would only round twice
    return (cancelled if cancelled is not None else rewritten).subs({offset: shift, relative: item - shift})


def _take_out(reduction, item, relative, offset):
    """``reduction`` of ``relative = item - offset``: the offset cancelled inside it, or taken out where affine."""
    argument, *rest = reduction.args
    if not argument.has(item):
        return reduction
    inside = argument.subs(item, relative + offset)
    if not inside.has(offset):
        return type(reduction)(inside, *rest)
    slope = sp.diff(inside, offset)
    remainder = inside - slope * offset
    if not (slope.is_number and slope != 0) or remainder.has(offset):
        return reduction  # the reduction depends on the offset: left in the input's own coordinates
    return (ROW_LENGTH if isinstance(reduction, RowSum) else 1) * slope * offset + type(reduction)(remainder, *rest)


def _cancel(formula, offset):
    """``formula`` without its terms linear in ``offset``, where their slopes add up to 0; else None.

    Terms in which the offset is not linear (a z-loss ``(offset + logsumexp)**2``) keep it: they depend on it.
    """
    terms = sp.Add.make_args(formula)
    linear = [t for t in terms if t.has(offset) and sp.diff(t, offset, 2) == 0]
    if not linear or sp.expand(sum(sp.diff(t, offset) for t in linear)) != 0:
        return None
    return sp.Add(*(t.subs(offset, 0) if t in linear else t for t in terms))
