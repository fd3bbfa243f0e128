"""Walks over an expression's distinct subexpressions.

A formula nested k deep (``e = sin(e)*exp(e) + e**2``, k times) is a tree of
size exponential in k but a DAG of size linear in it: SymPy's own passes
(``powsimp``, ``factor_terms``, ``replace``) visit a shared subexpression
once per use. These visit it once.
"""

from __future__ import annotations

import sympy as sp

# Expressions whose tree has more nodes than this go through the DAG walks below instead of SymPy's
# whole-tree passes (the same rewrites, applied node by node).
LARGE = 400


def tree_size(expr):
    """The number of nodes of ``expr`` as a tree (each use of a shared subexpression counted), in DAG time."""
    sizes = {}

    def size(node):
        if node not in sizes:
            sizes[node] = 1 + sum(size(a) for a in node.args if isinstance(a, sp.Basic))
        return sizes[node]

    return size(expr) if isinstance(expr, sp.Basic) else 1


def is_large(expr):
    return tree_size(expr) > LARGE


def dag_map(expr, rule):
    """``expr`` rebuilt with ``rule`` applied to each distinct node once, its arguments first."""
    done = {}

    def visit(node):
        if node in done:
            return done[node]
        args = [visit(a) if isinstance(a, sp.Basic) else a for a in node.args]
        rebuilt = node.func(*args) if any(a is not b for a, b in zip(args, node.args)) else node
        done[node] = result = rule(rebuilt)
        return result

    return visit(expr) if isinstance(expr, sp.Basic) else expr


def nodes(expr):
    """The distinct subexpressions of ``expr`` (itself included), each once."""
    seen, stack = set(), [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, sp.Basic) and node not in seen:
            seen.add(node)
            stack.extend(node.args)
    return seen
