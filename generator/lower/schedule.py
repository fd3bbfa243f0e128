"""Lowering: IR expressions to a scheduled, CSE'd list of statements.

Every backend prints the same statements. A statement assigns a symbol
either an expression or a row reduction of an expression; named symbols
(spec terms, reductions, adjoints) keep their names, and common
subexpressions become temporaries ``t0, t1, ...``.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..ir import Reduction
from ..spec.vocabulary import TEMP_PREFIX
from .rewrite import cheaper, finite_symbols


@dataclass
class Statement:
    """One line of a scheduled program: ``symbol = expr``, or ``symbol = reduce(expr)`` along the row."""

    symbol: sp.Symbol
    expr: sp.Expr  # the value, or the argument of the reduction
    reduction: Reduction | None = None  # set when the statement reduces along the row
    output: str | None = None  # set for the program's named results

    @property
    def name(self):
        return self.output or self.symbol.name


def schedule(definitions, outputs, temps=None, not_finite=frozenset(), kept=frozenset()):
    """Order ``definitions`` (symbol -> expr or Reduction) and ``outputs``.

    ``outputs`` is a list of (name, expr). Common subexpressions across all of
    them are shared. ``temps`` is the numbered symbol generator to draw from
    (pass the same one to number temporaries across programs). Free symbols
    are taken to be finite, but those in ``not_finite``. Definitions no
    output reads are dropped, but those of ``kept`` (values for another program).
    """
    temps = temps if temps is not None else sp.numbered_symbols(TEMP_PREFIX, real=True)
    names = list(definitions)
    rhs = [d.argument if isinstance(d, Reduction) else d for d in definitions.values()]
    rhs += [expr for _, expr in outputs]
    defined = {s: definitions[s] for s in names}
    free = set().union(*(expr.free_symbols for expr in rhs)) - set(names) - set(not_finite)
    finite = finite_symbols(defined, free)
    rhs = [cheaper(expr, finite) for expr in rhs]
    replacements, reduced = sp.cse(rhs, symbols=temps, order="none")
    replacements, reduced = _absorb_signs(replacements, reduced)

    pending = [Statement(s, e) for s, e in replacements]
    for symbol, expr in zip(names, reduced):
        definition = definitions[symbol]
        pending.append(Statement(symbol, expr, definition if isinstance(definition, Reduction) else None))
    for (name, _), expr in zip(outputs, reduced[len(names):]):
        pending.append(Statement(sp.Symbol(name, real=True), expr, output=name))

    defined = {s.symbol for s in pending}
    ready, ordered = set(), []
    while pending:
        for index, statement in enumerate(pending):
            needs = {s for s in statement.expr.free_symbols if s in defined}
            if needs <= ready:
                break
        else:
            raise RuntimeError("cyclic definitions: " + ", ".join(s.name for s in pending))
        pending.pop(index)
        ready.add(statement.symbol)
        ordered.append(statement)
    return _drop_unused(_inline_aliases(ordered), kept)


def _inline_aliases(statements):
    """``t1 = t4`` (a temporary naming another symbol) dropped, its uses reading ``t4``."""
    return inlined(statements, lambda s: s.expr.is_Symbol and s.reduction is None and not s.output
                   and is_temporary(s.symbol))


def inlined(statements, inline):
    """``statements`` without those ``inline(statement)`` picks, each written into the statements that read it
    (in order: one written into another that is written too reaches that one's readers)."""
    values, kept = {}, []
    for statement in statements:
        statement = Statement(statement.symbol, statement.expr.xreplace(values), statement.reduction, statement.output)
        if inline(statement):
            values[statement.symbol] = statement.expr
        else:
            kept.append(statement)
    return kept


def is_temporary(symbol):
    """Whether ``symbol`` is a temporary of common subexpressions (``t0``, ``t1``, ...)."""
    name = symbol.name
    return name.startswith(TEMP_PREFIX) and name[len(TEMP_PREFIX):].isdigit()


def _absorb_signs(replacements, reduced):
    """Negate a temporary where that removes negations from its uses.

    ``t = c*m; a = -t*x; b = -t*y`` costs two extra negations of whole arrays;
    ``t = -c*m; a = t*x; b = t*y`` none (the sign lands on the scalar ``c``).
    Only the temporary's definition and its uses are counted, so a long
    program costs time linear in its uses.
    """
    symbols = [s for s, _ in replacements]
    exprs = [e for _, e in replacements] + list(reduced)
    users = {}
    for position, expr in enumerate(exprs):
        for symbol in expr.free_symbols:
            users.setdefault(symbol, []).append(position)
    for index, symbol in enumerate(symbols):
        value = exprs[index]
        if not isinstance(value, sp.Expr) or isinstance(value, sp.Piecewise):
            continue
        flipped = {position: exprs[position].xreplace({symbol: -symbol}) for position in users.get(symbol, [])}
        flipped[index] = -value
        if _negations(flipped.values()) < _negations(exprs[position] for position in flipped):
            for position, expr in flipped.items():
                exprs[position] = expr
    return list(zip(symbols, exprs[:len(symbols)])), exprs[len(symbols):]


def _negations(exprs):
    """Products with a negative coefficient and negated symbols: each a pass over an array."""
    return sum(
        1 for expr in exprs for node in sp.preorder_traversal(expr)
        if isinstance(node, sp.Mul) and node.as_coeff_mul()[0] < 0
    )


def _drop_unused(statements, wanted=frozenset()):
    """Remove definitions no output (nor ``wanted``) depends on."""
    needed, kept = set(wanted), []
    for statement in reversed(statements):
        if statement.output or statement.symbol in needed:
            kept.append(statement)
            needed |= statement.expr.free_symbols
    return list(reversed(kept))
