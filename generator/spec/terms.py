"""Named terms (``Term("d", x - y)``): expanding them, and finding the ones an expression uses.

A spec names intermediate values so that the generated code computes each
once and reads like the formula. Derivation works on the expanded formula
and puts the names back; every later stage asks this module which terms an
expression needs.
"""

from __future__ import annotations

import sympy as sp

from .vocabulary import SpecError, Term


def expand_terms(expr):
    """``expr`` with every named term replaced by its definition, recursively."""
    for _ in range(1000):
        terms = [s for s in expr.free_symbols if isinstance(s, Term)]
        if not terms:
            return expr
        expr = expr.xreplace({t: t.definition for t in terms})
    raise SpecError("named terms refer to each other in a cycle")


def collect_terms(expr):
    """Every Term used, innermost first (so outer terms re-abstract last)."""
    found, stack = [], [expr]
    while stack:
        for symbol in sorted(stack.pop().free_symbols, key=sp.default_sort_key):  # a set: sort for determinism
            if isinstance(symbol, Term) and symbol not in found:
                found.append(symbol)
                stack.append(symbol.definition)
    return list(reversed(found))


def used_terms(expressions, terms):
    """The terms (with their dependencies, innermost first) that expressions use."""
    needed = set()
    stack = [s for e in expressions for s in e.free_symbols if isinstance(s, Term)]
    while stack:
        term = stack.pop()
        if term not in needed:
            needed.add(term)
            stack.extend(s for s in term.definition.free_symbols if isinstance(s, Term))
    return [t for t in terms if t in needed]


def term_definitions(expressions, terms):
    """``{term: definition}`` for the terms ``expressions`` need, innermost first (a program's definitions)."""
    return {t: t.definition for t in used_terms(expressions, terms)}
