"""The kernel IR: what derivation produces and every backend printer reads.

A loss variant (one value per flag) is lowered to straight-line programs of
SymPy expressions. Elementwise losses are one map forward and one map
backward. Row-wise losses are phases: forward reductions, the row epilogue,
backward reductions, row adjoints and the per-element gradient map. Backends
print the same IR: MLX ops on whole arrays, Metal/CUDA one element or one
row at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

# Symbols the generator introduces; their names are reserved (spec.vocabulary.RESERVED_NAMES).
COTANGENT = sp.Symbol("cotangent", real=True)
ROW_LENGTH = sp.Symbol("row_length", positive=True, integer=True)
# Per row, with class indices: the class is not the ignore_index; the class is inside the row; both; and
# what the row's outputs are where not both (0 if ignored, else NaN). See lower/safety.py.
KEPT_ROW = sp.Symbol("kept_row")
INSIDE_ROW = sp.Symbol("inside_row")
COUNTED_ROW = sp.Symbol("counted_row")
ROW_FILL = sp.Symbol("row_fill", real=True)


@dataclass
class Reduction:
    """``symbol = reduce_kind over the row of argument``.

    ``weight`` (sum only) multiplies the argument elementwise; ``target`` is
    the ClassTarget of a gather.
    """

    symbol: sp.Symbol
    kind: str  # sum | mean | max | logsumexp | gather | shift (the finite maximum or 0, never differentiated)
    argument: sp.Expr
    target: sp.Symbol | None = None


@dataclass
class GradientAlias:
    """grad of ``name`` equals ``sign`` times grad of ``source`` (no extra pass)."""

    name: str
    source: str
    sign: int


@dataclass
class ElementwiseIR:
    """An elementwise loss: its value and the gradient of each differentiable input, per element."""

    loss: sp.Expr
    gradients: dict  # input name -> expression in inputs, params, COTANGENT
    aliases: list = field(default_factory=list)

    def expressions(self):
        """Every expression of the program."""
        return [self.loss, *self.gradients.values()]


@dataclass
class RowwiseIR:
    """A row-wise loss: forward reductions, the row epilogue, then the backward's reductions, adjoints and gradients."""

    forward_reductions: list  # [Reduction] in dependency order
    loss: sp.Expr  # the row epilogue, in reduction symbols, per-row inputs, params
    backward_reductions: list  # [Reduction] computed in the backward pass
    adjoints: list  # [(symbol, expression)]: d loss / d row variable, times COTANGENT
    element_gradients: dict  # element-level input name -> expression
    row_gradients: dict  # per-row input name -> expression

    def expressions(self):
        """Every expression of the program."""
        return [self.loss, *(r.argument for r in self.forward_reductions + self.backward_reductions),
                *(e for _, e in self.adjoints), *self.element_gradients.values(), *self.row_gradients.values()]


@dataclass
class Variant:
    """One specialisation of a loss: a value for each flag."""

    flags: dict  # flag name -> bool
    ir: ElementwiseIR | RowwiseIR

    @property
    def suffix(self):
        return "".join(f"_{name}" if value else f"_no_{name}" for name, value in self.flags.items())


class IsInfinite(sp.logic.boolalg.BooleanFunction):
    """True where the argument is +inf or -inf (not NaN: a 0 times it stays NaN); the safety rewrites put it in."""

    nargs = 1

    @classmethod
    def eval(cls, argument):
        return None


class IsMinusInfinity(sp.logic.boolalg.BooleanFunction):
    """True where the argument is -inf (an ``exp`` of it is exactly 0); the safety rewrites put it in."""

    nargs = 1

    @classmethod
    def eval(cls, argument):
        return None
