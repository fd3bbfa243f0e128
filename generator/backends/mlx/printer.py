"""Print scheduled statements as MLX Python: whole-array ops, rows along ``axis``.

Row-level values keep their reduced axis (``keepdims=True``) so that they
broadcast against the row's elements.

A float parameter reaches the compiled bodies twice: as a 0-d array of the
compute dtype under its own name, which the arithmetic reads, and as a Python
float, ``<name>_value``, which only Python decisions read (``math`` functions,
a branch picked by a condition on parameters, the 0 * inf guard); a parameter
given as an array is that array there too, and the decisions are MLX's
(``rt.math_of``, ``rt.choose``, ``rt.zero_if`` take either). A value
that ``mx.compile`` sees as a constant is written into the C++ it compiles,
and the compiler then turns selections against it into a branch per element
(ten times slower on random data); an array argument keeps them branch-free,
and a new value of the parameter compiles nothing new. An integer parameter
stays a Python number: exponents and counts pick cheaper code when traced.

The code is printed for as few full-size array operations as possible: under
``mx.value_and_grad`` the inputs are tracers and ``mx.compile`` runs the
function uncompiled, one kernel and (often) one fresh buffer per operation.
So scalar and row-level factors are multiplied together before they meet a
full-size array, scalar terms are added once, ``max``/``min`` selections are
``mx.maximum``/``mx.minimum`` and a selection between a finite value and zero
is a multiplication by the condition (MLX's own autodiff convention).
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from ...ir import COTANGENT, ROW_LENGTH
from ...lower.order import ELEMENT as FULL
from ...lower.order import ROW, SCALAR, print_sum, product_parts, sum_order
from ...lower.safety import is_finite, masked
from ...spec.vocabulary import Param

_ARRAY_FUNCTIONS = {
    "exp": "rt.exp", "log": "mx.log", "Abs": "mx.abs", "sign": "mx.sign", "tanh": "mx.tanh",
    "cosh": "mx.cosh", "sinh": "mx.sinh", "sin": "mx.sin", "cos": "mx.cos", "atan": "mx.arctan",
    "erf": "mx.erf", "log1p": "mx.log1p", "expm1": "mx.expm1", "sigmoid": "rt.sigmoid",
    "softplus": "rt.softplus", "logcosh": "rt.logcosh",
    "logaddexp": "rt.logaddexp",
}
_SCALAR_FUNCTIONS = {
    "exp": "math.exp", "log": "math.log", "Abs": "abs", "tanh": "math.tanh", "cosh": "math.cosh",
    "sinh": "math.sinh", "sin": "math.sin", "cos": "math.cos", "atan": "math.atan", "erf": "math.erf",
    "log1p": "math.log1p", "expm1": "math.expm1", "sign": "sign",
}
_REDUCERS = {
    "sum": lambda argument: f"rt.row_sum({argument}, axis)",
    "mean": lambda argument: f"rt.row_mean({argument}, axis)",
    "max": lambda argument: f"rt.row_max({argument}, axis)",
    "shift": lambda argument: f"rt.row_shift({argument}, axis)",
}



class MLXPrinter(StrPrinter):
    """``names`` maps symbols to code; ``arrays`` are the symbols holding arrays.

    ``full`` are the symbols holding full-size (element-level) arrays and
    ``finite`` those that are finite wherever the inputs are. The program
    comes made safe (lower/safety.py): the printer prints it as it is.
    """

    def __init__(self, names, arrays, full=frozenset(), finite=frozenset(), printed_params=None):
        super().__init__({"full_prec": False})
        self.printed_params = printed_params if printed_params is not None else set()  # the names printed
        self._python = 0  # > 0 while printing what Python itself evaluates
        self.names = names
        self.arrays = arrays
        self.full = full
        self.finite = finite

    def is_scalar(self, expr):
        return not (expr.free_symbols & self.arrays)

    def level(self, expr):
        if self.is_scalar(expr):
            return SCALAR
        return FULL if expr.free_symbols & self.full else ROW

    def python(self, expr):
        """``expr`` printed for Python to evaluate: float parameters as their Python values."""
        self._python += 1
        try:
            return self._print(expr)
        finally:
            self._python -= 1

    # atoms
    def _print_Symbol(self, expr):
        if expr == ROW_LENGTH:
            return "row_length"
        if expr == COTANGENT:
            return "cotangent"
        if isinstance(expr, Param):
            name = param_name(expr, python=self._python > 0)
            self.printed_params.add(name)
            return name
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

    def _print_NaN(self, expr):
        return "math.nan"

    def _print_IsMinusInfinity(self, expr):
        return f"({self._print(expr.args[0])} == -math.inf)"

    def _print_IsInfinite(self, expr):
        return f"mx.isinf({self._print(expr.args[0])})"

    def _print_BooleanFalse(self, expr):
        return "False"

    # arithmetic
    def _print_Mul(self, expr):
        """The cheaper factors multiplied together first, then each full-size one."""
        if self.is_scalar(expr):
            return super()._print_Mul(expr)
        # A mask multiplies a finite product only (lower/safety.py selects the others).
        maskable = all(self._is_finite((masked(f) or (f,))[0]) for f in expr.args)
        masks, factors = [], []
        for factor in expr.args:
            selected = masked(factor)
            if selected is not None and not self.is_scalar(factor) and maskable:
                factor = selected[0]
                masks.append(selected[1])
            factors.append(factor)
        low, top, divisors = product_parts(factors, self.level, max([self.level(m) for m in masks], default=SCALAR))
        sign, parts = "", []
        if masks:
            # The cheaper factors times the boolean mask (a float array in one pass; mx.where
            # costs about three times as much on a CPU, a branch per element).
            condition = masks[0] if len(masks) == 1 else sp.And(*masks)
            if low != 1:
                parts.append(self._print(low) if low.is_Number else self.parenthesize(low, PRECEDENCE["Mul"]))
            parts.append(self._print(condition))
        elif low == -1:
            sign = "-"
        elif low != 1:
            parts.append(self._print(low) if low.is_Number else self.parenthesize(low, PRECEDENCE["Mul"]))
        parts += [self.parenthesize(f, PRECEDENCE["Mul"]) for f in top]
        code = "*".join(parts) if parts else "1"
        code += "".join(f"/{self.parenthesize(d, PRECEDENCE['Pow'])}" for d in divisors)
        return sign + code

    def _print_Add(self, expr, order=None):
        """Full-size terms one by one, then the sum of the cheaper terms once."""
        if self.is_scalar(expr):
            return super()._print_Add(expr, order)
        content, primitive = expr.as_content_primitive()
        if content != 1 and self.level(expr) == FULL:
            return self._print_Mul(sp.Mul(content, primitive, evaluate=False))
        return print_sum(sum_order(expr.args, self.level), self._print)

    def _is_finite(self, expr):
        return is_finite(expr, self.is_scalar, self.finite)

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        if self.is_scalar(expr) and exponent == sp.Rational(1, 2):
            if _has_params(base):
                return f'rt.math_of("sqrt", {self.python(base)})'
            return f"math.sqrt({self.python(base)})"
        if self.is_scalar(expr):
            if exponent == -1:
                return f"1/{self.parenthesize(base, PRECEDENCE['Pow'])}"
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
        if self.is_scalar(exponent):
            return f"rt.power({code}, {self._print(exponent)})"  # picks square, sqrt, ... for a Python number
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

    def _print_ITE(self, expr):
        # a boolean if-then-else, as SymPy folds nested Piecewise conditions (e.g. relu of a minimum)
        if self.is_scalar(expr):
            condition, if_true, if_false = (self.python(a) for a in expr.args)
            return f"rt.choose({condition}, {if_true}, {if_false})"
        condition, if_true, if_false = (self._print(a) for a in expr.args)
        return f"mx.where({condition}, {if_true}, {if_false})"

    def _fold(self, func, args):
        code = self._print(args[0])
        for arg in args[1:]:
            code = f"{func}({code}, {self._print(arg)})"
        return code

    def _print_Piecewise(self, expr):
        *branches, (last, cond) = expr.args
        if cond != sp.true:
            raise ValueError(f"Piecewise without a default branch: {expr}")
        if all(self.is_scalar(condition) for _, condition in expr.args):
            # Conditions on parameters alone: Python picks the branch (MLX, for a parameter given as an array).
            if len(branches) == 1 and branches[0][0] == 0 and not self.is_scalar(last):
                return f"rt.zero_if({self.python(branches[0][1])}, {self._print(last)})"  # an array's shape kept
            value = self.python if self.is_scalar(expr) else self._print
            code = value(last)
            for branch, condition in reversed(branches):
                code = f"rt.choose({self.python(condition)}, {value(branch)}, {code})"
            return code
        selected = masked(expr)
        if selected is not None and self._is_finite(selected[0]) and not self.is_scalar(selected[0]):
            return f"{self.parenthesize(selected[0], PRECEDENCE['Mul'])}*{self._print(selected[1])}"
        code = self._print(last)
        for value, condition in reversed(branches):
            code = f"mx.where({self._print(condition)}, {self._print(value)}, {code})"
        return code

    def _print_Max(self, expr):
        return self._fold("mx.maximum", expr.args)

    def _print_Min(self, expr):
        return self._fold("mx.minimum", expr.args)

    # functions
    def _print_Function(self, expr):
        name = type(expr).__name__
        if self.is_scalar(expr):
            args = [self.python(a) for a in expr.args]
            if name in ("sigmoid", "softplus", "logaddexp", "logcosh"):
                raise ValueError(f"{name} of a parameter alone is not supported")
            if _has_params(expr):  # a parameter may be given as an array
                return f'rt.math_of("{_SCALAR_FUNCTIONS[name].removeprefix("math.")}", {args[0]})'
            return f"{_SCALAR_FUNCTIONS[name]}({', '.join(args)})"
        args = [self._print(a) for a in expr.args]
        return f"{_ARRAY_FUNCTIONS[name]}({', '.join(args)})"

    _print_exp = _print_log = _print_Abs = _print_sign = _print_tanh = _print_Function
    _print_cosh = _print_sinh = _print_sin = _print_cos = _print_atan = _print_erf = _print_Function
    _print_log1p = _print_expm1 = _print_Function


def _has_params(expr):
    """Whether a scalar expression reads a parameter (or a value computed from one), not constants alone."""
    return bool(expr.free_symbols)


def param_name(param, python=False):
    """How the compiled bodies name a parameter: see the module docstring."""
    return f"{param.name}_value" if python and not param.integer else param.name


def element_level_symbols(statements, element_symbols):
    """The symbols that hold element-level (full-row) arrays."""
    element = set(element_symbols)
    for statement in statements:
        if statement.reduction is None and statement.expr.free_symbols & element:
            element.add(statement.symbol)
    return element


def print_program(statements, names, arrays, element_symbols=(), like=None, given=(), printed_params=None,
                  as_given=None):
    """Lines of Python for ``statements`` (made safe by ``lower.safety``, gathers at class indices).

    ``like`` is the array whose shape and dtype an output that is a constant
    takes. ``given`` are statements computed elsewhere (the forward's
    residuals and what they depend on) whose symbols ``statements`` read: not
    printed, but what they are (finite, a condition) decides how their uses
    are printed. The names under which parameters are read (see
    ``param_name``) are added to ``printed_params``. ``as_given`` names the
    inputs as given, before they are computed in the compute dtype: a row's
    maximum and the value at the class are exact in any dtype, and read there
    a half-precision input is not copied to float32 for them (a reduction's or
    a gather's argument is always made whole).
    """
    given = list(given)
    known = given + list(statements)
    finite = _finite(known, arrays)
    arrays = set(arrays)
    for statement in given:
        if statement.reduction is not None or statement.expr.free_symbols & arrays:
            arrays.add(statement.symbol)
    element = element_level_symbols(known, element_symbols)
    used_by_elements = set().union(*(s.expr.free_symbols for s in statements if s.symbol in element or (
        s.reduction is not None and s.expr.free_symbols & element)), set())
    lines = []
    for statement in statements:
        printer = MLXPrinter(names, arrays, element, finite, printed_params)
        if statement.reduction is not None:
            code = _print_reduction(printer, statement, element, as_given or {})
        elif printer.is_scalar(statement.expr) and statement.output:
            code = f"mx.full({like}.shape, {printer.doprint(statement.expr)}, dtype={like}.dtype)"
        elif printer.level(statement.expr) == ROW and statement.symbol in used_by_elements and not statement.expr.is_Symbol:
            # Computed once per row: mx.compile would otherwise fuse it into the
            # element kernel and recompute it for every element of the row.
            code = f"mx.contiguous({printer.doprint(statement.expr)})"
        elif printer.is_scalar(statement.expr):
            code = printer.python(statement.expr)  # a Python number, as its uses read it
        else:
            code = printer.doprint(statement.expr)
        if not printer.is_scalar(statement.expr) or statement.reduction is not None:
            arrays.add(statement.symbol)
        lines.append(f"{statement.name} = {code}")
    return lines


def _finite(statements, arrays):
    """Array symbols that are finite wherever the inputs are (inputs, cotangent, gathers, sums of such)."""
    defined = {s.symbol for s in statements}
    finite = {a for a in arrays if a not in defined}
    for statement in statements:
        printer = MLXPrinter({}, set(arrays) | defined, finite=finite)
        if statement.reduction is not None and statement.reduction.kind not in ("sum", "mean", "max", "gather", "shift"):
            continue
        if printer._is_finite(statement.expr):
            finite.add(statement.symbol)
    return finite


def _print_reduction(printer, statement, element, as_given):
    reduction = statement.reduction
    if reduction.kind == "shift" and statement.expr in as_given:
        return f"rt.upcast(rt.row_shift({as_given[statement.expr]}, axis), compute)"
    argument = printer.doprint(statement.expr)
    if reduction.kind != "gather":
        return _REDUCERS[reduction.kind](argument)
    target = reduction.target
    at_class = statement.expr.free_symbols & element
    if not at_class:
        return argument  # a row-level value is the same at every class
    # The value at the class from the elements at the class: one per row, not the whole row computed first.
    taken = {s: f"rt.at_index({printer.names.get(s, s.name)}, {target.name}_index, axis)"
             for s in at_class}
    taken.update({s: f"rt.upcast(rt.at_index({as_given[s]}, {target.name}_index, axis), compute)"
                  for s in at_class if s in as_given})  # not from a float32 copy made whole for it
    per_row = MLXPrinter({**printer.names, **taken}, printer.arrays, printer.full - set(taken), printer.finite,
                         printer.printed_params)
    return per_row.doprint(statement.expr)
