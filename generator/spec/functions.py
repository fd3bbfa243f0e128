"""Numerically stable SymPy functions a spec may use, with their derivatives.

Each function here is printed by every backend as a stable primitive (never as
the textbook formula that overflows), and its derivative is written in terms of
other stable functions so that gradients stay finite where the math is finite.
"""

import sympy as sp

from .dag import dag_map, is_large


class sigmoid(sp.Function):
    """1 / (1 + exp(-u)), printed as a stable sigmoid."""

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)


class softplus(sp.Function):
    """log(1 + exp(u)), printed as logaddexp(u, 0)."""

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])


def log_sigmoid(u):
    """log(sigmoid(u)) = -softplus(-u)."""
    return -softplus(-u)


class logaddexp(sp.Function):
    """log(exp(u) + exp(v)), printed as a stable logaddexp (no overflow, no underflow to -inf)."""

    nargs = 2

    def fdiff(self, argindex=1):
        u, v = self.args
        return sigmoid(u - v) if argindex == 1 else sigmoid(v - u)


class logcosh(sp.Function):
    """log(cosh(u)), printed as logaddexp(u, -u) - log(2)."""

    def fdiff(self, argindex=1):
        return sp.tanh(self.args[0])


class Select(sp.Function):
    """Select(flag, if_true, if_false): chosen when the code is generated.

    A flag is a boolean argument of the loss (such as ``with_logits``); the
    generator emits one specialised body for each value, so the branch not
    taken costs nothing at run time.
    """

    nargs = 3


def maximum(a, b):
    """max(a, b) with MLX's tie convention: at a == b the gradient goes to b."""
    return sp.Piecewise((a, sp.StrictGreaterThan(a, b)), (b, True))


def minimum(a, b):
    """min(a, b) with MLX's tie convention: at a == b the gradient goes to b."""
    return sp.Piecewise((a, sp.StrictLessThan(a, b)), (b, True))


def relu(u):
    """max(u, 0); the gradient at u == 0 is 0 (the hinge's convention in MLX)."""
    return maximum(u, sp.Integer(0))


STABLE_FUNCTIONS = (sigmoid, softplus, logaddexp, logcosh)


def stable_rewrite(expr):
    """Rewrite textbook forms that overflow into the stable functions above."""
    u = sp.Wild("u")
    rules = [
        (sp.log(1 + sp.exp(u)), lambda u: softplus(u)),
        (sp.log(sp.cosh(u)), lambda u: logcosh(u)),
        (1 / (1 + sp.exp(-u)), lambda u: sigmoid(u)),
        (sp.log(sigmoid(u)), lambda u: -softplus(-u)),
        (sp.log(1 - sigmoid(u)), lambda u: -softplus(u)),
    ]
    if not is_large(expr):
        for pattern, build in rules:
            expr = expr.replace(pattern, build)
        return expr

    def rewrite(node):  # the same rules node by node: replace walks the whole tree
        for pattern, build in rules:
            if node.func != pattern.func or len(node.args[0].args) != len(pattern.args[0].args):
                continue  # matching a two-term pattern against a long sum is combinatorial
            match = node.match(pattern)
            if match is not None and u in match:
                node = build(match[u])
        return node

    return dag_map(expr, rewrite)
