"""Print scheduled statements as MLX Python: whole-array ops, rows along ``axis``.

Row-level values keep their reduced axis (``keepdims=True``) so that they
broadcast against the row's elements. Expressions of parameters alone are
printed as plain Python arithmetic: Python scalars are weakly typed in MLX, so
they never promote a half-precision array to float32.
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.str import StrPrinter

from ..ir import COTANGENT, ROW_LENGTH
from ..spec import Param

_ARRAY_FUNCTIONS = {
    "exp": "mx.exp", "log": "mx.log", "Abs": "mx.abs", "sign": "mx.sign", "tanh": "mx.tanh",
    "cosh": "mx.cosh", "sinh": "mx.sinh", "sin": "mx.sin", "cos": "mx.cos", "atan": "mx.arctan",
    "erf": "mx.erf", "log1p": "mx.log1p", "expm1": "mx.expm1", "sigmoid": "mx.sigmoid",
}
_SCALAR_FUNCTIONS = {
    "exp": "math.exp", "log": "math.log", "Abs": "abs", "tanh": "math.tanh", "cosh": "math.cosh",
    "sinh": "math.sinh", "sin": "math.sin", "cos": "math.cos", "atan": "math.atan", "erf": "math.erf",
    "log1p": "math.log1p", "expm1": "math.expm1",
}
_REDUCERS = {"sum": "mx.sum", "mean": "mx.mean", "max": "mx.max", "logsumexp": "mx.logsumexp"}


class MLXPrinter(StrPrinter):
    """``names`` maps symbols to code; ``arrays`` are the symbols holding arrays."""

    def __init__(self, names, arrays, known=None, nan_guard=True):
        super().__init__({"full_prec": False})
        self.names = names
        self.arrays = arrays
        self.known = known or {}  # temporaries that are conditions or exponentials -> their value
        self.nan_guard = nan_guard

    def is_scalar(self, expr):
        return not (expr.free_symbols & self.arrays)

    # atoms
    def _print_Symbol(self, expr):
        if expr == ROW_LENGTH:
            return "row_length"
        if expr == COTANGENT:
            return "cotangent"
        return self.names.get(expr, expr.name)

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Rational(self, expr):
        return repr(float(expr))

    def _print_Integer(self, expr):
        return str(int(expr))

    def _print_Exp1(self, expr):
        return "math.e"

    def _print_Pi(self, expr):
        return "math.pi"

    def _print_BooleanTrue(self, expr):
        return "True"

    def _print_BooleanFalse(self, expr):
        return "False"

    # arithmetic
    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        if self.is_scalar(expr):
            if exponent == sp.Rational(1, 2):
                return f"math.sqrt({self._print(base)})"
            return f"{self.parenthesize(base, 60)} ** {self.parenthesize(exponent, 60)}"
        code = self._print(base)
        if exponent == 2:
            return f"mx.square({code})"
        if exponent == -1:
            return f"mx.reciprocal({code})"
        if exponent == -2:
            return f"mx.reciprocal(mx.square({code}))"
        if exponent == sp.Rational(1, 2):
            return f"mx.sqrt({code})"
        if exponent == sp.Rational(-1, 2):
            return f"mx.rsqrt({code})"
        return f"mx.power({code}, {self._print(exponent)})"

    def _print_Relational(self, expr):
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[expr.rel_op]
        return f"({self._print(expr.lhs)} {op} {self._print(expr.rhs)})"

    def _print_And(self, expr):
        return self._fold("mx.logical_and", expr.args)

    def _print_Or(self, expr):
        return self._fold("mx.logical_or", expr.args)

    def _print_Not(self, expr):
        return f"mx.logical_not({self._print(expr.args[0])})"

    def _fold(self, func, args):
        code = self._print(args[0])
        for arg in args[1:]:
            code = f"{func}({code}, {self._print(arg)})"
        return code

    def _print_Piecewise(self, expr):
        *branches, (last, cond) = expr.args
        if cond != sp.true:
            raise ValueError(f"Piecewise without a default branch: {expr}")
        if self.is_scalar(expr):
            code = self._print(last)
            for value, condition in reversed(branches):
                code = f"({self._print(value)} if {self._print(condition)} else {code})"
            return code
        code = self._print(last)
        if self.nan_guard and not all(self.is_scalar(condition) for _, condition in branches):
            # A comparison with NaN is false both ways: take the default branch only
            # when its own condition holds, else give NaN (NaN in, NaN out).
            negated = [sp.Not(condition.xreplace(self.known)) for _, condition in branches]
            code = f"mx.where({self._print(sp.to_nnf(sp.And(*negated)))}, {code}, math.nan)"
        for value, condition in reversed(branches):
            code = f"mx.where({self._print(condition)}, {self._print(value)}, {code})"
        return code

    def _print_Mul(self, expr):
        code = super()._print_Mul(expr)
        if self.is_scalar(expr):
            return code
        # 0 * inf is not NaN when the 0 is exact: a parameter set to 0 removes its
        # term (label_smoothing = 0 with a -inf logit), and exp(u) that underflows
        # to 0 takes its product with it (0 log 0 = 0: a log-probability of -inf).
        arrays = [f for f in expr.args if not self.is_scalar(f)]
        exps = [f for f in arrays if isinstance(self.known.get(f, f), sp.exp)] if len(arrays) > 1 else []
        if exps:
            zero = " | ".join(f"({self._print(f)} == 0)" for f in exps)
            code = f"mx.where({zero}, 0.0, {code})"
        params = [f for f in expr.args if isinstance(f, Param) and f.range.contains(0)]
        if params:
            zero = " or ".join(f"{self._print(f)} == 0" for f in params)
            code = f"mx.where({zero}, 0.0, {code})"
        return code

    # functions
    def _print_Function(self, expr):
        name = type(expr).__name__
        args = [self._print(a) for a in expr.args]
        if self.is_scalar(expr):
            if name == "sign":
                return f"math.copysign(1.0, {args[0]}) if {args[0]} != 0 else 0.0"
            if name in ("sigmoid", "softplus", "logcosh"):
                raise ValueError(f"{name} of a parameter alone is not supported")
            return f"{_SCALAR_FUNCTIONS[name]}({', '.join(args)})"
        if name == "softplus":
            return f"mx.logaddexp({args[0]}, 0.0)"
        if name == "logcosh":
            return f"(mx.logaddexp({args[0]}, -{self.parenthesize(expr.args[0], 100)}) - math.log(2.0))"
        return f"{_ARRAY_FUNCTIONS[name]}({', '.join(args)})"

    _print_exp = _print_log = _print_Abs = _print_sign = _print_tanh = _print_Function
    _print_cosh = _print_sinh = _print_sin = _print_cos = _print_atan = _print_erf = _print_Function
    _print_log1p = _print_expm1 = _print_Function


def _level(statements, element_symbols):
    """The symbols that hold element-level (full-row) arrays."""
    element = set(element_symbols)
    for statement in statements:
        if statement.reduction is None and statement.expr.free_symbols & element:
            element.add(statement.symbol)
    return element


def print_program(statements, names, arrays, element_symbols=(), targets=None, like=None, nan_guard=True):
    """Lines of Python for ``statements``.

    ``targets`` maps a ClassTarget to ``"indices"`` or ``"probabilities"``:
    how gathers are printed. ``like`` is the array whose shape and dtype an
    output that is a constant takes. ``nan_guard`` makes a branch whose
    condition compares a NaN give NaN (for the loss: NaN in, NaN out); the
    gradients leave it off and take the last branch, as MLX's autodiff of
    maximum/where does.
    """
    arrays = set(arrays)
    element = _level(statements, element_symbols)
    lines = []
    known = {}
    for statement in statements:
        printer = MLXPrinter(names, arrays, known, nan_guard)
        if statement.reduction is not None:
            code = _print_reduction(printer, statement, element, targets or {}, names)
        elif printer.is_scalar(statement.expr) and statement.output:
            code = f"mx.full({like}.shape, {printer.doprint(statement.expr)}, dtype={like}.dtype)"
        else:
            code = printer.doprint(statement.expr)
        if not printer.is_scalar(statement.expr) or statement.reduction is not None:
            arrays.add(statement.symbol)
        if statement.reduction is None and isinstance(statement.expr, (sp.logic.boolalg.Boolean, sp.exp)):
            known[statement.symbol] = statement.expr.xreplace(known)
        lines.append(f"{statement.name} = {code}")
    return lines


def _print_reduction(printer, statement, element, targets, names):
    reduction = statement.reduction
    argument = printer.doprint(statement.expr)
    if reduction.kind != "gather":
        return f"{_REDUCERS[reduction.kind]}({argument}, axis=axis, keepdims=True)"
    target = reduction.target
    if targets[target] == "probabilities":
        # The expectation sums over the target's support: a probability of exactly 0
        # contributes 0 even where the value is infinite (a -inf logit).
        t = names[target]
        return f"mx.sum(mx.where({t} == 0, 0.0, {t} * {argument}), axis=axis, keepdims=True)"
    if not (statement.expr.free_symbols & element):
        return argument  # a row-level value is the same at every class
    return f"mx.take_along_axis({argument}, {target.name}_index, axis=axis)"
