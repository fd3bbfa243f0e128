"""The forward and backward programs of one loss variant: scheduled, made safe, the same for every backend.

The backward reads the forward's costly values (``residuals``); the MLX
path holds them between the two programs, a kernel computes them again
(``recomputed``) or reads the row values the forward kernel wrote. Either
way both run the same statements, so they round alike.
"""

from __future__ import annotations

import sympy as sp

from ..ir import Reduction
from ..spec.terms import collect_terms, term_definitions
from ..spec.vocabulary import TEMP_PREFIX
from .residuals import (
    ForwardValues, definition_expressions, lift_shared_calls, read_residuals, replace_in, temporaries_after,
)
from .safety import expectations, guard, masked_rows
from .schedule import inlined, is_temporary, schedule


def array_symbols(inputs, terms):
    """The inputs and the terms computed from them (``terms`` innermost first)."""
    arrays = set(inputs)
    for term in terms:
        if term.definition.free_symbols & arrays:
            arrays.add(term)
    return arrays


def programs(forward_definitions, loss, backward_definitions, outputs, arrays, values_of_arrays, *, form=None,
             ignoring=False, exponentials=(), for_backward=frozenset()):
    """``(forward, backward, residuals)``: both programs, the backward reading the forward's costly values.

    ``arrays`` are the inputs; ``values_of_arrays`` every symbol holding an
    array (terms and reductions computed from the inputs too); ``residuals``
    the names of the forward's values the backward reads. ``form``: how
    class targets are given (``"indices"`` masks the rows, with ``ignoring``
    an ignore_index; ``"probabilities"`` makes gathers expectations).
    ``exponentials``: symbols the backward reads that hold an ``exp`` the
    backend computes itself (the MLX path's softmax numerators).
    ``for_backward``: forward definitions the loss does not read, computed for the backward.
    """
    temps = sp.numbered_symbols(TEMP_PREFIX, real=True)
    forward_definitions, lifted = lift_shared_calls(
        forward_definitions, [loss], definition_expressions(backward_definitions) + [e for _, e in outputs],
        values_of_arrays, temps)
    forward = schedule(forward_definitions, [("loss", loss.xreplace(lifted))], temps, kept=for_backward)
    values = ForwardValues(forward, arrays)
    outputs = [(name, values.replace(e)) for name, e in outputs]
    backward_definitions = {s: replace_in(values, d) for s, d in backward_definitions.items() if s not in values.symbols}
    backward = schedule(backward_definitions, outputs, temporaries_after(values), not_finite=values.not_finite)
    residuals = read_residuals(forward, backward, values)
    backward = guard(backward, propagate_nan=False, given=forward, exponentials=exponentials)
    forward = guard(forward, propagate_nan=True)
    if form == "probabilities":
        forward, backward = expectations(forward), expectations(backward)
    elif form == "indices":
        forward, backward = masked_rows(forward, ignoring=ignoring), masked_rows(backward, ignoring=ignoring)
    return forward, backward, residuals


def _gathered_temporaries_inlined(statements, read_elsewhere):
    """``statements`` with each temporary that gathers at the class alone read (not ``read_elsewhere``:
    by the backward) written into them.

    A gather takes the value at the class from each element-level value at the class, one a row;
    a temporary gathers share (poly1's softmax at the class, for the loss and, made in the forward,
    for the backward) would be computed for the whole row first.
    """
    readers = {}
    for statement in statements:
        for symbol in statement.expr.free_symbols:
            readers.setdefault(symbol, []).append(statement)
    gathered = {s.symbol for s in statements
                if is_temporary(s.symbol) and s.reduction is None and not s.output and readers.get(s.symbol)
                and s.symbol not in read_elsewhere
                and all(r.reduction is not None and r.reduction.kind == "gather" for r in readers[s.symbol])}
    return inlined(statements, lambda s: s.symbol in gathered)


def elementwise_programs(loss, ir):
    """``(forward, backward, residuals)`` of an elementwise variant (an aliased gradient is not computed:
    it is its source's)."""
    terms = collect_terms(sp.Tuple(*ir.expressions()))  # the spec's, and those derivation names
    aliased = {a.name for a in ir.aliases}
    gradients = [(f"grad_{n}", e) for n, e in ir.gradients.items() if n not in aliased]
    arrays = set(loss.inputs)
    return programs(term_definitions([ir.loss], terms), ir.loss, term_definitions([e for _, e in gradients], terms),
                    gradients, arrays, array_symbols(arrays, terms))


def rowwise_programs(loss, ir, outputs, form, replacements=None, exponentials=(), on_blocks=False):
    """``(forward, backward, residuals)`` of a row-wise variant whose backward computes ``outputs``.

    ``replacements`` are made in the backward (the MLX path's softmax read from the forward's
    numerators, ``exponentials``); ``form`` is how class targets are given. ``on_blocks``: the
    backward's own row reductions (poly1's softmax at the class, multi_margin's sum of its margins'
    slopes: none reads the cotangent) are made in the forward, so that the backward reads per-row
    values alone and runs on blocks of the classes (the linear_ forms' tiles). Made there, they follow
    the forward's rules: a NaN in a row makes them NaN, where the backward's would leave it out.
    """
    replacements = replacements or {}
    terms = collect_terms(sp.Tuple(*ir.expressions()))  # the spec's, and those derivation names
    arrays = set(loss.inputs)
    forward_reductions, backward_reductions = ir.forward_reductions, ir.backward_reductions
    if on_blocks:
        forward_reductions, backward_reductions = forward_reductions + backward_reductions, []
    forward_defs = {r.symbol: r for r in forward_reductions}
    forward_defs.update(term_definitions([r.argument for r in forward_reductions] + [ir.loss], terms))
    outputs = [(n, e.subs(replacements)) for n, e in outputs]
    backward_defs = {r.symbol: Reduction(r.symbol, r.kind, r.argument.subs(replacements), r.target)
                     for r in backward_reductions}
    backward_defs.update({s: e.subs(replacements) for s, e in ir.adjoints})
    backward_defs.update(term_definitions(definition_expressions(backward_defs) + [e for _, e in outputs], terms))
    row_values = array_symbols(arrays | {r.symbol for r in forward_reductions}, terms)
    ignoring = any(t.ignore_index is not None for t in loss.class_targets)
    forward, backward, residuals = programs(
        forward_defs, ir.loss, backward_defs, outputs, arrays, row_values, form=form if loss.class_targets else None,
        ignoring=ignoring, exponentials=exponentials,
        for_backward=frozenset(r.symbol for r in forward_reductions[len(ir.forward_reductions):]))
    if on_blocks and form == "indices":
        forward = _gathered_temporaries_inlined(forward, set().union(*(s.expr.free_symbols for s in backward)))
    return forward, backward, residuals
