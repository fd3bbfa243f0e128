"""Float64 references for the kernel tests, taken straight from a spec's formula.

The formula (named terms expanded, each flag's branch chosen) is evaluated
with NumPy in float64: SymPy's ``lambdify`` for the arithmetic and NumPy
reductions along the row for ``RowSum``, ``LogSumExp``, ``Gather``, ...
Gradients are central finite differences of that evaluation. Nothing here
uses the generator's derivation, scheduling or printers, so it checks the
kernels independently of how they were made.
"""

from __future__ import annotations

import math
import numpy as np
import sympy as sp

from generator.spec import functions as fn
from generator.spec.vocabulary import ROW_REDUCTIONS, ClassTarget, ClassWeights, Input, Param, Term

_NUMPY = [{
    "sigmoid": lambda u: np.exp(-np.logaddexp(0.0, -u)),
    "softplus": lambda u: np.logaddexp(u, 0.0),
    "logcosh": lambda u: np.logaddexp(u, -u) - math.log(2.0),
    "erf": np.vectorize(math.erf, otypes=[float]),
}, "numpy"]


def _expand(expr):
    while True:
        terms = [s for s in expr.free_symbols if isinstance(s, Term)]
        if not terms:
            return expr
        expr = expr.xreplace({t: t.definition for t in terms})


def formula(loss, flags):
    """The spec's formula with its terms expanded and its flags resolved."""
    expr = _expand(loss.formula)
    return expr.replace(lambda e: isinstance(e, fn.Select), lambda e: e.args[1] if flags[e.args[0].name] else e.args[2])


class Reference:
    """The loss of each element (elementwise) or each row (row-wise) in float64.

    Arrays are given in ``rows x row_length`` layout for row-wise losses
    (element inputs and probability targets), ``(rows, 1)`` for per-row
    inputs, and integer ``(rows,)`` for class indices.
    """

    def __init__(self, loss, flags, form=None):
        self.loss = loss
        self.form = form
        expr = formula(loss, flags)
        self.symbols = [d for d in loss.inputs if not (isinstance(d, ClassTarget) and form == "indices")]
        self.symbols += [p for p in loss.params if isinstance(p, Param)]
        self.target = next(iter(loss.class_targets), None)
        self.steps = []  # (symbol, kind, function of the arguments)
        found = []
        while True:
            nodes = sorted({n for n in sp.preorder_traversal(expr) if self._innermost(n)}, key=sp.default_sort_key)
            if not nodes:
                break
            mapping = {}
            for node in nodes:
                symbol = sp.Symbol(f"reduction{len(found)}", real=True)
                found.append(symbol)
                self.steps.append((symbol, node, self._lambdify(node.args[0], found[:-1])))
                mapping[node] = symbol
            expr = expr.xreplace(mapping)
        self.epilogue = self._lambdify(expr, found)

    @staticmethod
    def _innermost(node):
        return isinstance(node, ROW_REDUCTIONS) and not any(
            isinstance(n, ROW_REDUCTIONS) for a in node.args for n in sp.preorder_traversal(a)
        )

    def _lambdify(self, expr, reductions):
        arguments = self.symbols + ([self.target] if self.target is not None and self.form == "indices" else [])
        return sp.lambdify(arguments + reductions, expr, modules=_NUMPY)

    def __call__(self, arrays, params):
        """``arrays``: {input name: array}; ``params``: {name: value}. The loss, float64."""
        values = [arrays[s.name] if not isinstance(s, Param) else params[s.name] for s in self.symbols]
        if not self.steps:
            shape = np.broadcast_shapes(*[np.shape(v) for v in values])
            return np.broadcast_to(self.epilogue(*values), shape).astype(np.float64)
        element = next(arrays[i.name] for i in self.loss.inputs if isinstance(i, Input) and not i.per_row)
        rows, row_length = element.shape
        extra = []
        if self.target is not None and self.form == "indices":
            indices = arrays[self.target.name]
            extra = [(np.arange(row_length)[None, :] == indices[:, None]).astype(np.float64)]
        relative = self._arguments(self._relative(values), extra, arrays, rows, row_length) \
            if self.form == "probabilities" else None
        reduced = []
        for index, (_, node, function) in enumerate(self.steps):
            with np.errstate(divide="ignore"):  # log(0) = -inf: a class left out of a LogSumExp (softmax_focal_loss)
                argument = np.broadcast_to(function(*values, *extra, *reduced), (rows, row_length))
            if relative is not None and node.kind == "gather":
                # a probability row's expectation, differentiated by the row as mlx.nn.losses does: the
                # logits relative to their row's maximum, what moves with it taken out once (the row sums to 1)
                targets = arrays[self.target.name]
                reduced.append((targets * relative[index]).sum(axis=1, keepdims=True)
                               + (argument - relative[index]).mean(axis=1, keepdims=True))
            else:
                reduced.append(self._reduce(node, argument, arrays))
        return np.broadcast_to(self.epilogue(*values, *extra, *reduced), (rows, 1))[:, 0].astype(np.float64)

    def _relative(self, values):
        """The element inputs relative to their row's maximum (the rest as given)."""
        element = {i.name for i in self.loss.inputs
                   if isinstance(i, Input) and not i.per_row and not isinstance(i, ClassWeights)}
        return [v - v.max(axis=1, keepdims=True) if s.name in element else v for s, v in zip(self.symbols, values)]

    def _arguments(self, values, extra, arrays, rows, row_length):
        """Each step's argument at ``values`` (its reductions computed from them)."""
        arguments, reduced = [], []
        for _, node, function in self.steps:
            with np.errstate(divide="ignore"):
                argument = np.broadcast_to(function(*values, *extra, *reduced), (rows, row_length))
            arguments.append(argument)
            reduced.append(self._reduce(node, argument, arrays))
        return arguments

    def _reduce(self, node, argument, arrays):
        kind = node.kind
        if kind == "sum":
            return argument.sum(axis=1, keepdims=True)
        if kind == "mean":
            return argument.mean(axis=1, keepdims=True)
        if kind == "max":
            return argument.max(axis=1, keepdims=True)
        if kind == "logsumexp":
            top = argument.max(axis=1, keepdims=True)
            return top + np.log(np.exp(argument - top).sum(axis=1, keepdims=True))
        if self.form == "indices":  # gather at the class index
            return np.take_along_axis(argument, arrays[self.target.name][:, None], axis=1)
        return (arrays[self.target.name] * argument).sum(axis=1, keepdims=True)


def finite_difference(reference, arrays, params, name, scale):
    """d(sum of scale * loss)/d arrays[name] by central differences (float64), and where it has a kink.

    Elementwise losses and per-row inputs: one loss value depends on one input
    value, so all are perturbed at once. Row-wise element inputs: one column
    of every row at a time. Where the one-sided differences disagree the
    input sits on a kink (a Piecewise boundary, |0|, ...): those places are
    returned as a mask, since the kernels pick one documented subgradient there.
    """
    value = arrays[name]
    step = 6e-6 * np.maximum(1.0, np.abs(value))
    middle = reference(arrays, params)

    def sides(up, down):
        above = reference({**arrays, name: up}, params) - middle
        below = middle - reference({**arrays, name: down}, params)
        kink = np.abs(above - below) > 1e-3 * (np.abs(above) + np.abs(below)) + 1e-12 * (1.0 + np.abs(middle))
        return scale * (above + below), kink

    if value.ndim == 1 or not reference.steps or value.shape[1] == 1:
        change, kink = sides(value + step, value - step)
        return change.reshape(value.shape) / (2 * step), kink.reshape(value.shape)
    gradient = np.zeros_like(value)
    kinks = np.zeros(value.shape, dtype=bool)
    for column in range(value.shape[1]):
        up, down = value.copy(), value.copy()
        up[:, column] += step[:, column]
        down[:, column] -= step[:, column]
        change, kink = sides(up, down)
        gradient[:, column] = change / (2 * step[:, column])
        kinks[:, column] = kink
    return gradient, kinks


__all__ = ["Reference", "formula", "finite_difference"]
