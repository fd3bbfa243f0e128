"""Residuals: which costly values the backward reads from the forward instead of computing again.

Under ``mx.grad`` MLX runs the generated bodies op by op, so a value the
forward and the backward share (an ``exp``, a ``log``, a root, a selection)
would be paid twice. The forward computes each shared costly call as a
statement of its own and the backward reads it (a residual, held from the
forward to the backward); cheap values (``x - y``) are computed again.

Row-wise programs, and elementwise ones of half-precision inputs, follow
another policy (``recomputed_if_cheaper``): the backward reads per-row values
alone and computes the element-level ones again, so that nothing the size of
the input is held in float32 from the forward to the backward.
"""

from __future__ import annotations

import sympy as sp

from ..ir import Reduction
from ..spec.dag import nodes
from ..spec.functions import STABLE_FUNCTIONS
from ..spec.vocabulary import TEMP_PREFIX
from .rewrite import extremum, finite_symbols
from .schedule import is_temporary


def shared_calls(forward, backward, arrays):
    """The costly calls on arrays (exp, log, roots, the stable functions) in both expression lists.

    The forward computes each as a statement of its own, which the backward
    then reads (see ForwardValues) instead of calling it again.
    """
    def calls(expressions):
        return {node for expr in expressions for node in nodes(expr)
                if _is_costly_call(node) and node.free_symbols & arrays}
    return sorted(calls(forward) & calls(backward), key=sp.default_sort_key)


def _is_costly_call(node):
    return isinstance(node, (sp.exp, sp.log, sp.tanh, sp.erf, *STABLE_FUNCTIONS)) or (
        isinstance(node, sp.Pow) and not node.exp.is_Integer)


def is_costly(expr, conditions, arrays):
    """Whether ``expr`` prints to an operation far dearer than a pass of arithmetic.

    On a CPU an ``exp`` costs about fifty multiplies and a ``where`` fifteen:
    a function (exp, log, the stable functions), a root or other non-integer
    power, a selection on arrays that is not a maximum or a minimum.
    """
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Piecewise):
            on_arrays = any(c.free_symbols & arrays for _, c in node.args)
            if on_arrays and extremum(node, conditions) is None:
                return True
        elif isinstance(node, sp.Function) and not isinstance(node, (sp.Abs, sp.sign, sp.Max, sp.Min)):
            return True
        elif isinstance(node, sp.Pow) and not node.exp.is_Integer:
            return True
    return False


class ForwardValues:
    """The costly array values a forward program computes, for the backward to read.

    Each residual is an array held from the forward to the backward, so only
    values that ``costly(expr, conditions, arrays)`` judges dear are kept.
    """

    def __init__(self, forward, arrays, costly=is_costly):
        is_array, expanded, self.by_value = set(arrays), {}, {}
        conditions = {s.symbol: s.expr for s in forward if isinstance(s.expr, sp.core.relational.Relational)}
        self.named = set()
        for statement in forward:
            value = statement.expr.xreplace(expanded)
            if statement.reduction is not None or statement.expr.free_symbols & is_array:
                is_array.add(statement.symbol)
            if is_temporary(statement.symbol):
                expanded[statement.symbol] = value
            if statement.output or statement.symbol not in is_array or statement.reduction is not None:
                continue
            if costly(statement.expr, conditions, is_array):
                if is_temporary(statement.symbol):
                    self.by_value[value] = statement.symbol
                else:
                    self.named.add(statement.symbol)
        free = set().union(set(), *(s.expr.free_symbols for s in forward)) - {s.symbol for s in forward}
        definitions = {s.symbol: s.reduction or s.expr for s in forward}
        self.not_finite = set(definitions) - finite_symbols(definitions, free)
        self.next_temporary = 1 + max((int(s.symbol.name[len(TEMP_PREFIX):]) for s in forward
                                       if is_temporary(s.symbol)), default=-1)

    @property
    def symbols(self):
        return set(self.by_value.values()) | self.named

    def replace(self, expr):
        """``expr`` reading every costly value the forward has."""
        return expr.xreplace(self.by_value)


def lift_shared_calls(definitions, roots, backward, arrays, temps):
    """``(definitions, lifted)``: the forward's with each costly call the backward makes too as a
    statement of its own (a symbol from ``temps``), which the backward then reads (ForwardValues)."""
    calls = shared_calls(roots + definition_expressions(definitions), backward, arrays)
    lifted = {call: next(temps) for call in calls}
    own = {symbol: call.xreplace({c: s for c, s in lifted.items() if c != call}) for call, symbol in lifted.items()}
    return {**own, **{s: replace_in(lifted, d) for s, d in definitions.items()}}, lifted


def definition_expressions(definitions):
    """The expressions of ``definitions``: a reduction's argument, else the value."""
    return [getattr(d, "argument", d) for d in definitions.values()]


def replace_in(replacements, definition):
    """A definition (expression or row reduction) with ``replacements`` (a dict or ForwardValues) made."""
    replace = replacements.replace if isinstance(replacements, ForwardValues) else lambda e: e.xreplace(replacements)
    if isinstance(definition, Reduction):
        return Reduction(definition.symbol, definition.kind, replace(definition.argument), definition.target)
    return replace(definition)


def temporaries_after(values):
    """Fresh temporaries numbered after the forward's (the backward reads both)."""
    return sp.numbered_symbols(TEMP_PREFIX, start=values.next_temporary, real=True)


def read_residuals(forward, backward, values):
    """The forward's costly values the backward reads, in the forward's order."""
    read = set().union(set(), *(s.expr.free_symbols for s in backward))
    return [s.name for s in forward if s.symbol in values.symbols and s.symbol in read]


def recomputed(forward, backward, only=None):
    """The backward with the forward's values it reads computed again first (its row reductions left to read).

    A term both programs define (``shifted0``, ``smoothed_targets``) is then
    computed once, as the forward does. ``only``: the symbols that may be
    computed again (the others are read from the forward); every one if None.
    """
    by_symbol = {s.symbol: s for s in forward
                 if s.reduction is None and not s.output and (only is None or s.symbol in only)}
    defined = {s.symbol for s in backward}
    needed, stack = set(), [f for s in backward for f in s.expr.free_symbols if f not in defined]
    while stack:
        symbol = stack.pop()
        if symbol in by_symbol and symbol not in needed:
            needed.add(symbol)
            stack.extend(by_symbol[symbol].expr.free_symbols)
    return [s for s in forward if s.symbol in needed] + [s for s in backward if s.symbol not in needed]


# Costly calls per element a backward may make again rather than read from the forward: a value
# held is a float32 array the input's size (twice a half-precision input's), alive from the forward
# to the backward; an exp computed again costs about three passes of arithmetic on this project's CPU.
RECOMPUTE_BUDGET = 4


def recomputed_if_cheaper(forward, backward, element, arrays):
    """The backward computing again the forward's element-level values it reads, where that is cheap.

    The residual policy of row-wise programs, and of elementwise ones for
    half-precision inputs: per-row values are read from the forward;
    element-level ones (``element``: the symbols holding a value per element)
    are computed again when that costs at most ``RECOMPUTE_BUDGET`` costly
    calls per element, so the forward holds nothing the size of the input for
    the backward. Else the backward reads them (``backward`` is returned as
    it is).

    Why row-wise programs for float32 too (make bench, value_and_grad of 2^22
    float32 elements, against the better of MLX's eager and compiled
    autodiff): holding exp(logits - max), cross_entropy as called peaked at
    1.17 times it, and kl_div_loss compiled at 1.04 (exp(targets)); computing
    them again on chunks of the rows, at 0.74 and 0.90, and still 1.85 and
    1.92 times as fast as MLX's compiled autodiff. An elementwise loss holds its values
    in float32: its forward and backward are fused whole, and its peak is
    the same either way (chunks would make it larger under mx.compile).
    Values of the parameters alone (``arrays`` are the inputs) are computed
    again too: a residual is an array.
    """
    again = recomputed(forward, backward, only=set(element) | _scalars(forward, arrays))
    repeated = [s for s in again[:len(again) - len(backward)] if s.symbol in element]
    cost = sum(1 for s in repeated for node in sp.preorder_traversal(s.expr)
               if _is_costly_call(node) and node.free_symbols & set(element))
    return again if cost <= RECOMPUTE_BUDGET else backward


def _scalars(statements, arrays):
    """The symbols ``statements`` define from parameters alone (none of ``arrays``, no reduction)."""
    on_arrays = set(arrays)
    for statement in statements:
        if statement.reduction is not None or statement.expr.free_symbols & on_arrays:
            on_arrays.add(statement.symbol)
    return {s.symbol for s in statements} - on_arrays


def residuals_read(forward, backward):
    """The forward's values the backward reads without computing them, in the forward's order."""
    defined = {s.symbol for s in backward}
    read = set().union(set(), *(s.expr.free_symbols for s in backward)) - defined
    return [s.symbol for s in forward if s.symbol in read]
