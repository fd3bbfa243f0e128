"""Print scheduled statements as float32 C-like code for Metal and CUDA kernels.

One printer serves both GPU languages; a :class:`Dialect` names the math
functions. Every value is a ``float`` (inputs are read with
``static_cast<float>``, so half and bfloat16 arrays are computed in float32),
every literal carries an ``f`` suffix (Metal has no ``double``, and a double
literal would silently promote CUDA arithmetic), and the stable functions
(sigmoid, softplus, logcosh, log1p, ...) call the ``losscc_*`` helpers of the
kernel header (``templates/gpu/<language>/header.j2``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import sympy as sp
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from ...ir import COTANGENT, ROW_LENGTH
from ...lower.order import ELEMENT, ROW, SCALAR, print_sum, product_parts, sum_order
from ...spec.terms import collect_terms
from ...spec.vocabulary import Param, SpecError


@dataclass(frozen=True)
class Dialect:
    """A GPU language as the printer spells it: the name of each math function."""

    name: str
    functions: dict  # SymPy function name -> C function


_SHARED_HELPERS = {
    "sign": "losscc_sign", "sigmoid": "losscc_sigmoid", "softplus": "losscc_softplus",
    "logcosh": "losscc_logcosh", "logaddexp": "losscc_logaddexp",
}

METAL = Dialect("metal", {
    "exp": "metal::exp", "log": "metal::log", "Abs": "metal::abs", "tanh": "metal::tanh",
    "cosh": "metal::cosh", "sinh": "metal::sinh", "sin": "metal::sin", "cos": "metal::cos",
    "atan": "metal::atan", "sqrt": "metal::sqrt", "rsqrt": "metal::rsqrt",
    "Min": "losscc_min", "Max": "losscc_max",
    # Metal's standard library has no log1p, expm1 or erf, and pow is undefined for x < 0.
    "log1p": "losscc_log1p", "expm1": "losscc_expm1", "erf": "losscc_erf", "pow": "losscc_pow",
    **_SHARED_HELPERS,
})

CUDA = Dialect("cuda", {
    "exp": "expf", "log": "logf", "Abs": "fabsf", "tanh": "tanhf", "cosh": "coshf", "sinh": "sinhf",
    "sin": "sinf", "cos": "cosf", "atan": "atanf", "sqrt": "sqrtf", "rsqrt": "rsqrtf",
    "Min": "losscc_min", "Max": "losscc_max",
    "log1p": "log1pf", "expm1": "expm1f", "erf": "erff", "pow": "losscc_pow",
    **_SHARED_HELPERS,
})

# Identifiers a spec name must not take in kernel source: C/C++, Metal and
# CUDA keywords and types, MLX's kernel attributes, and the kernel's own locals.
_RESERVED = set("""
    alignas alignof and asm auto bool break case catch char class const constexpr const_cast continue
    decltype default delete do double dynamic_cast else enum explicit export extern false float for friend
    goto if inline int long mutable namespace new noexcept not nullptr operator or private protected
    public register reinterpret_cast return short signed sizeof static static_assert static_cast struct
    switch template this throw true try typedef typeid typename union unsigned using virtual void
    volatile while xor half bfloat uint ushort uchar size_t int8_t int16_t int32_t int64_t uint8_t
    uint16_t uint32_t uint64_t device constant thread threadgroup kernel vertex fragment metal simd
    float16_t bfloat16_t min max abs exp log sqrt pow sign
    dispatch_quadgroups_per_threadgroup dispatch_simdgroups_per_threadgroup
    dispatch_threads_per_threadgroup grid_origin grid_size quadgroup_index_in_threadgroup
    quadgroups_per_threadgroup simdgroup_index_in_threadgroup simdgroups_per_threadgroup
    thread_execution_width thread_index_in_quadgroup thread_index_in_simdgroup
    thread_index_in_threadgroup thread_position_in_grid thread_position_in_threadgroup
    threadgroup_position_in_grid threadgroups_per_grid threads_per_grid threads_per_simdgroup
    threads_per_threadgroup threadIdx blockIdx blockDim gridDim warpSize cg mlx core cu T
    i j n at row rows base inner lane lanes tid simdgroup simdgroups scratch meta params value
    weighted reduce scalar_cotangent row_length_count group loss_value
    s t frames count width length state_count now before after last inside emissions states input_lengths
    state_counts alphas betas previous reached
""".split()) | {call.split("::")[-1] for dialect in (METAL, CUDA) for call in dialect.functions.values()}


def c_name(name):
    """A spec name as a kernel identifier (renamed only if it is reserved there).

    Names shaped like the kernel's own (``acc_*``, ``*_in``, ``*_out``,
    ``*_index``) get a trailing underscore too, so they never meet them.
    """
    own = name.startswith(("losscc", "acc_")) or name.endswith(("_in", "_out", "_index"))
    return f"{name}_" if name in _RESERVED or own else name


def check_kernel_names(loss):
    """Raise a :class:`SpecError` where two of ``loss``'s names are one kernel identifier ("value", "value_")."""
    names = {d.name for d in loss.declarations} | {t.name for t in collect_terms(loss.formula)}
    in_kernels = {}
    for name in sorted(names):
        other = in_kernels.setdefault(c_name(name), name)
        if other != name:
            raise SpecError(f"names {other!r} and {name!r} are the same identifier in the generated kernels")


def float_literal(value):
    """``value`` as a float32 literal (``1.5f``; infinities and NaN through the header's helpers)."""
    value = float(value)
    if math.isinf(value):
        return "losscc_inf()" if value > 0 else "(-losscc_inf())"
    if math.isnan(value):
        return "losscc_nan()"
    text = repr(value)
    if not re.search(r"[.e]", text):
        text += ".0"
    return text + "f"


class CPrinter(StrPrinter):
    """``names`` maps symbols to kernel identifiers (default: the symbol's name).

    ``element`` are the symbols that vary along the row (every array of an
    elementwise kernel), ``scalars`` those that do not vary at all (parameters
    and what is computed from them alone): sums are added in the order the
    MLX path adds them (``lower.order``).
    """

    def __init__(self, dialect, names=None, element=(), scalars=()):
        super().__init__({"full_prec": False})
        self.dialect = dialect
        self.names = names or {}
        self.element = set(element)
        self.scalars = {ROW_LENGTH, *scalars}

    def level(self, expr):
        free = expr.free_symbols
        if free & self.element:
            return ELEMENT
        return SCALAR if all(isinstance(f, Param) or f in self.scalars for f in free) else ROW

    def _print(self, expr, **kwargs):
        # Constant subexpressions (log(2*pi)/2, ...) are folded to one literal.
        if isinstance(expr, sp.Expr) and not expr.is_Atom and expr.is_number and expr.is_real:
            return float_literal(expr.evalf(20))
        return super()._print(expr, **kwargs)

    def _call(self, function, *args):
        return f"{self.dialect.functions[function]}({', '.join(self._print(a) for a in args)})"

    # atoms
    def _print_Symbol(self, expr):
        if expr == ROW_LENGTH:
            return "row_length"
        if expr == COTANGENT:
            return "cotangent"
        return self.names.get(expr, c_name(expr.name))

    def _print_Float(self, expr):
        return float_literal(expr)

    def _print_Rational(self, expr):
        return float_literal(expr)

    def _print_Integer(self, expr):
        return float_literal(expr)

    def _print_Exp1(self, expr):
        return float_literal(math.e)

    def _print_Pi(self, expr):
        return float_literal(math.pi)

    def _print_Infinity(self, expr):
        return "losscc_inf()"

    def _print_NegativeInfinity(self, expr):
        return "(-losscc_inf())"

    def _print_NaN(self, expr):
        return "losscc_nan()"

    def _print_BooleanTrue(self, expr):
        return "true"

    def _print_IsMinusInfinity(self, expr):
        return f"({self._print(expr.args[0])} == -losscc_inf())"

    def _print_IsInfinite(self, expr):
        return f"({self._call('Abs', expr.args[0])} == losscc_inf())"  # NaN is not

    def _print_BooleanFalse(self, expr):
        return "false"

    # arithmetic
    def _print_Add(self, expr, order=None):
        content, primitive = expr.as_content_primitive()
        if content != 1 and self.level(expr) == ELEMENT:
            return self._print_Mul(sp.Mul(content, primitive, evaluate=False))
        return print_sum(sum_order(expr.args, self.level), self._print)

    def _print_Mul(self, expr):
        low, top, divisors = product_parts(expr.args, self.level)
        sign, parts = "", []
        if low == -1:
            sign = "-"
        elif low != 1:
            parts.append(self._print(low) if low.is_Number else self.parenthesize(low, PRECEDENCE["Mul"]))
        parts += [self.parenthesize(f, PRECEDENCE["Mul"]) for f in top]
        code = "*".join(parts) if parts else "1.0f"
        return sign + code + "".join(f" / {self.parenthesize(d, PRECEDENCE['Pow'])}" for d in divisors)

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        if exponent == 2:
            return f"losscc_square({self._print(base)})"
        if exponent == -1:
            return f"(1.0f / {self.parenthesize(base, 50)})"
        if exponent == -2:
            return f"(1.0f / losscc_square({self._print(base)}))"
        if exponent == sp.Rational(1, 2):
            return self._call("sqrt", base)
        if exponent == sp.Rational(-1, 2):
            return self._call("rsqrt", base)
        if exponent == sp.Rational(3, 2):
            return f"({self.parenthesize(base, 50)} * {self._call('sqrt', base)})"
        if exponent == sp.Rational(-3, 2):
            return f"({self._call('rsqrt', base)} / {self.parenthesize(base, 50)})"
        return self._call("pow", base, exponent)

    def _print_Relational(self, expr):
        return f"({self._print(expr.lhs)} {expr.rel_op} {self._print(expr.rhs)})"

    def _print_And(self, expr):
        return "(" + " && ".join(self._print(a) for a in expr.args) + ")"

    def _print_Or(self, expr):
        return "(" + " || ".join(self._print(a) for a in expr.args) + ")"

    def _print_Not(self, expr):
        return f"(!{self._print(expr.args[0])})"

    def _print_ITE(self, expr):
        # a boolean if-then-else, as SymPy folds nested Piecewise conditions (e.g. relu of a minimum)
        condition, if_true, if_false = (self._print(a) for a in expr.args)
        return f"({condition} ? {if_true} : {if_false})"

    def _print_Piecewise(self, expr):
        *branches, (last, condition) = expr.args
        if condition != sp.true:
            raise ValueError(f"Piecewise without a default branch: {expr}")
        code = self._print(last)
        for value, condition in reversed(branches):
            code = f"({self._print(condition)} ? {self._print(value)} : {code})"
        return code

    # functions
    def _print_Function(self, expr):
        name = type(expr).__name__
        if name not in self.dialect.functions:
            raise ValueError(f"the {self.dialect.name} printer has no function {name!r}")
        return self._call(name, *expr.args)

    def _print_Min(self, expr):
        return self._fold("Min", expr.args)

    def _print_Max(self, expr):
        return self._fold("Max", expr.args)

    def _fold(self, function, args):
        """Min/Max of several arguments as nested two-argument calls (the lowering's clips)."""
        code = self._print(args[0])
        for arg in args[1:]:
            code = f"{self.dialect.functions[function]}({code}, {self._print(arg)})"
        return code

    _print_exp = _print_log = _print_Abs = _print_sign = _print_tanh = _print_Function
    _print_cosh = _print_sinh = _print_sin = _print_cos = _print_atan = _print_erf = _print_Function
    _print_log1p = _print_expm1 = _print_Function


def is_condition(expr, conditions=()):
    """Whether ``expr`` is a truth value (a comparison, a logical operation, or a named one)."""
    return expr.is_Relational or isinstance(expr, (sp.logic.boolalg.BooleanFunction, sp.logic.boolalg.BooleanAtom)) \
        or expr in conditions


def declaration(printer, symbol_name, expr, conditions=()):
    """``const float <name> = <expr>;`` (``bool`` for a condition)."""
    kind = "bool" if is_condition(expr, conditions) else "float"
    return f"const {kind} {symbol_name} = {printer.doprint(expr)};"
