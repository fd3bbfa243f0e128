"""Print scheduled statements as MLX Python: whole-array ops, rows along ``axis``.

Row-level values keep their reduced axis (``keepdims=True``) so that they
broadcast against the row's elements.

A float parameter reaches the compiled bodies twice: as a 0-d array of the
compute dtype under its own name, which the arithmetic reads, and as a Python
float, ``<name>_value``, which only Python decisions read (``math`` functions,
a branch picked by a condition on parameters, the 0 * inf guard). A value
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
from ...lower.rewrite import extremum
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
    "log1p": "math.log1p", "expm1": "math.expm1",
}
_REDUCERS = {
    "sum": lambda argument: f"rt.row_sum({argument}, axis)",
    "mean": lambda argument: f"rt.row_mean({argument}, axis)",
    "max": lambda argument: f"rt.row_max({argument}, axis)",
    "shift": lambda argument: f"rt.row_shift({argument}, axis)",
}


# Levels of a value: a Python scalar, a 0-d or row-level array (cheap), a full-size array.
SCALAR, ROW, FULL = 0, 1, 2


class MLXPrinter(StrPrinter):
    """``names`` maps symbols to code; ``arrays`` are the symbols holding arrays.

    ``full`` are the symbols holding full-size (element-level) arrays and
    ``finite`` those that are finite wherever the inputs are; ``exponentials``
    the temporaries holding an ``exp``. With ``nan_guard`` a selection whose
    condition compares a NaN gives NaN (see print_program).
    """

    def __init__(self, names, arrays, full=frozenset(), finite=frozenset(), conditions=None,
                 exponentials=frozenset(), nan_guard=False, printed_params=None):
        super().__init__({"full_prec": False})
        self.printed_params = printed_params if printed_params is not None else set()  # the names printed
        self._python = 0  # > 0 while printing what Python itself evaluates
        self.names = names
        self.arrays = arrays
        self.full = full
        self.finite = finite
        self.conditions = conditions or {}  # temporaries holding a comparison -> the comparison
        self.exponentials = exponentials
        self.nan_guard = nan_guard

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

    def _print_BooleanFalse(self, expr):
        return "False"

    # arithmetic
    def _print_Mul(self, expr):
        """The cheaper factors multiplied together first, then each full-size one."""
        if self.is_scalar(expr):
            return super()._print_Mul(expr)
        # A mask multiplies only where the product is finite: 0 * inf would be NaN, not 0.
        maskable = not self.nan_guard and all(self._is_finite((_masked(f) or (f,))[0]) for f in expr.args)
        if not maskable:
            # then u * (c ? v : 0) selects: c ? u * v : 0
            for factor in expr.args:
                selected = _masked(factor)
                if selected is not None and not self.is_scalar(factor):
                    rest = sp.Mul(*[f for f in expr.args if f is not factor]) * selected[0]
                    return self._print(sp.Piecewise((rest, selected[1]), (0, True)))
        coefficient, masks, factors = sp.Integer(1), [], []
        for factor in expr.args:
            if factor.is_Add and self.level(factor) == FULL:
                # (x + y)/2 is one scaling, not two: SymPy distributes numbers over sums.
                content, factor = factor.as_content_primitive()
                coefficient *= content
            selected = _masked(factor)
            if selected is not None and not self.is_scalar(factor) and maskable:
                factor = selected[0]
                masks.append(selected[1])
            number, rest = factor.as_coeff_mul()
            coefficient *= number
            factors.extend(rest)
        numerator, denominator = [], []
        for factor in factors:
            base, exponent = factor.as_base_exp()
            # A parameter divides an array (x / beta is inf at beta = 0; Python's 1/beta would raise).
            if exponent.is_Number and exponent < 0 and not base.is_Number:
                denominator.append(base ** -exponent)
            else:
                numerator.append(factor)
        top = max(self.level(f) for f in numerator + denominator + masks)
        low = coefficient * sp.Mul(*[f for f in numerator if self.level(f) < top])
        low /= sp.Mul(*[f for f in denominator if SCALAR < self.level(f) < top])
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
        parts += [self.parenthesize(f, PRECEDENCE["Mul"]) for f in numerator if self.level(f) == top]
        code = "*".join(parts) if parts else "1"
        code += "".join(f"/{self.parenthesize(d, PRECEDENCE['Pow'])}" for d in denominator
                        if self.level(d) == top or self.level(d) == SCALAR)
        return self._zero_times_infinity(expr, sign + code)

    def _zero_times_infinity(self, expr, code):
        """0 * inf is not NaN where the 0 is exact.

        A parameter set to 0 removes its term (label_smoothing = 0 with a -inf
        logit), and an exp(u) that underflows to 0 takes its product with it
        (0 log 0 = 0: a log-probability of -inf).
        """
        arrays = [f for f in expr.args if not self.is_scalar(f)]
        if len(arrays) > 1:
            # exp(-inf) = 0 is the case to catch (a finite exponent makes the other factor finite too):
            # compared on the exponent, not on a second exp.
            zero = [f"({self._print(f.args[0])} == -math.inf)" for f in arrays if isinstance(f, sp.exp)]
            zero += [f"({self._print(f)} == 0)" for f in arrays if f in self.exponentials]
            if zero:
                code = f"mx.where({' | '.join(zero)}, 0.0, {code})"
        params = [f for f in expr.args if isinstance(f, Param) and f.range.contains(0)]
        if params:
            zero = " or ".join(f"{self.python(f)} == 0" for f in params)
            code = f"rt.zero_if({zero}, {code})"
        return code

    def _print_Add(self, expr, order=None):
        """Full-size terms one by one, then the sum of the cheaper terms once."""
        if self.is_scalar(expr):
            return super()._print_Add(expr, order)
        content, primitive = expr.as_content_primitive()
        if content != 1 and self.level(expr) == FULL:
            return self._print_Mul(sp.Mul(content, primitive, evaluate=False))
        top = max(self.level(t) for t in expr.args)
        first = [t for t in expr.args if self.level(t) == top]
        rest = [t for t in expr.args if self.level(t) < top]
        # Positive terms, then the cheaper ones, then the negative ones as subtractions.
        positive = sorted((t for t in first if not t.could_extract_minus_sign()), key=sp.default_sort_key)
        negative = sorted((t for t in first if t.could_extract_minus_sign()), key=sp.default_sort_key)
        terms = positive + ([sp.Add(*rest)] if rest else []) + negative
        code = ""
        for index, term in enumerate(terms):
            text = self._print(term)
            if term.is_Add:
                text = f"({text})"
            if text.startswith("-"):
                code += ("-" if index == 0 else " - ") + text[1:]
            else:
                code += ("" if index == 0 else " + ") + text
        return code

    def _is_finite(self, expr):
        """Finite wherever the finite symbols are: built by +, |.|, sign and products by parameters.

        A product of two arrays (a power of one) is not: 1e30 * 1e30 overflows float32.
        """
        for node in sp.preorder_traversal(expr):
            if isinstance(node, sp.Mul) and sum(not self.is_scalar(f) for f in node.args) > 1:
                return False
            if isinstance(node, sp.Symbol):
                if node in self.arrays and node not in self.finite:
                    return False
            elif isinstance(node, sp.Pow):
                if not self.is_scalar(node):
                    return False
            elif not isinstance(node, (sp.Add, sp.Mul, sp.Number, sp.Abs, sp.sign)) and not self.is_scalar(node):
                return False
        return True

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        if self.is_scalar(expr) and exponent == sp.Rational(1, 2):
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
            return f"({if_true} if {condition} else {if_false})"
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
            # Conditions on parameters alone: Python picks the branch, only it is computed.
            value = self.python if self.is_scalar(expr) else self._print
            code = value(last)
            for branch, condition in reversed(branches):
                code = f"({value(branch)} if {self.python(condition)} else {code})"
            return code
        chosen = extremum(expr, self.conditions)
        if chosen is not None:
            function, first, second = chosen
            return f"mx.{function}imum({self._print(first)}, {self._print(second)})"
        selected = _masked(expr)
        if selected is not None and self._is_finite(selected[0]) and not self.is_scalar(selected[0]) \
                and not self.nan_guard:
            return f"{self.parenthesize(selected[0], PRECEDENCE['Mul'])}*{self._print(selected[1])}"
        code = self._print(last)
        if self.nan_guard:
            # A comparison with NaN is false both ways: take the default branch only
            # when its own condition holds, else give NaN (NaN in, NaN out).
            negated = sp.to_nnf(sp.And(*[sp.Not(condition.xreplace(self.conditions)) for _, condition in branches]))
            # NaN != y is true: "not equal" must be "less or greater" to be false for a NaN.
            negated = negated.replace(lambda e: isinstance(e, sp.Ne),
                                      lambda e: sp.Or(sp.StrictLessThan(e.lhs, e.rhs), sp.StrictGreaterThan(e.lhs, e.rhs)))
            code = f"mx.where({self._print(negated)}, {code}, math.nan)"
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
            if name == "sign":
                return f"math.copysign(1.0, {args[0]}) if {args[0]} != 0 else 0.0"
            if name in ("sigmoid", "softplus", "logaddexp", "logcosh"):
                raise ValueError(f"{name} of a parameter alone is not supported")
            return f"{_SCALAR_FUNCTIONS[name]}({', '.join(args)})"
        args = [self._print(a) for a in expr.args]
        return f"{_ARRAY_FUNCTIONS[name]}({', '.join(args)})"

    _print_exp = _print_log = _print_Abs = _print_sign = _print_tanh = _print_Function
    _print_cosh = _print_sinh = _print_sin = _print_cos = _print_atan = _print_erf = _print_Function
    _print_log1p = _print_expm1 = _print_Function


def param_name(param, python=False):
    """How the compiled bodies name a parameter: see the module docstring."""
    return f"{param.name}_value" if python and not param.integer else param.name


def _masked(expr):
    """``(value, condition)`` for ``Piecewise((value, condition), (0, True))`` (or with 0 first)."""
    if not isinstance(expr, sp.Piecewise) or len(expr.args) != 2:
        return None
    (first, condition), (second, _) = expr.args
    if second == 0:
        return first, condition
    if first == 0:
        return second, sp.Not(condition)
    return None


def _level(statements, element_symbols):
    """The symbols that hold element-level (full-row) arrays."""
    element = set(element_symbols)
    for statement in statements:
        if statement.reduction is None and statement.expr.free_symbols & element:
            element.add(statement.symbol)
    return element


def print_program(statements, names, arrays, element_symbols=(), targets=None, like=None, nan_guard=True, given=(),
                  printed_params=None):
    """Lines of Python for ``statements``.

    ``targets`` maps a ClassTarget to ``"indices"`` or ``"probabilities"``:
    how gathers are printed. ``like`` is the array whose shape and dtype an
    output that is a constant takes. ``nan_guard`` makes a branch whose
    condition compares a NaN give NaN (for the loss: NaN in, NaN out); the
    gradients leave it off and take the last branch, as MLX's autodiff of
    maximum/where does. ``given`` are statements computed elsewhere (the
    forward's residuals and what they depend on) whose symbols ``statements``
    read: not printed, but what they are (finite, a condition, an
    exponential) decides how their uses are printed. The names under which
    parameters are read (see ``param_name``) are added to ``printed_params``.
    """
    given = list(given)
    known = given + list(statements)
    finite = _finite(known, arrays)
    arrays = set(arrays)
    for statement in given:
        if statement.reduction is not None or statement.expr.free_symbols & arrays:
            arrays.add(statement.symbol)
    element = _level(known, element_symbols)
    conditions = {s.symbol: s.expr for s in known if isinstance(s.expr, sp.core.relational.Relational)}
    used_by_elements = set().union(*(s.expr.free_symbols for s in statements if s.symbol in element or (
        s.reduction is not None and s.expr.free_symbols & element)), set())
    exponentials = {s.symbol for s in known if s.reduction is None and isinstance(s.expr, sp.exp)}
    values = {s.symbol: s.expr for s in known if s.reduction is None}
    shifts = {s.symbol: s.expr for s in known if s.reduction is not None and s.reduction.kind == "shift"}
    lines = []
    for statement in statements:
        printer = MLXPrinter(names, arrays, element, finite, conditions, exponentials, nan_guard, printed_params)
        if statement.reduction is not None and statement.reduction.kind == "logsumexp":
            lines += _print_logsumexp(printer, statement, _at_most_zero(statement.expr, values, shifts))
            arrays.update([statement.symbol, *logsumexp_parts(statement.symbol)])
            continue
        if statement.reduction is not None:
            code = _print_reduction(printer, statement, element, targets or {}, names)
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


def logsumexp_parts(symbol):
    """The symbols of a logsumexp's ``e = exp(g - max g)`` (element-level) and ``s = sum e``."""
    return sp.Symbol(f"{symbol.name}_exp", real=True), sp.Symbol(f"{symbol.name}_sum", real=True)


def _at_most_zero(expr, values, shifts):
    """Whether ``expr`` is ``z - m`` with ``m`` the shift of ``z``: at most 0, and 0 somewhere, in a finite row."""
    expr = values.get(expr, expr)
    return any(expr == argument - shift for shift, argument in shifts.items())


def _print_logsumexp(printer, statement, shifted=False):
    """``max + log(sum(exp(g - max)))``, keeping ``exp(g - max)`` and its sum for the backward.

    A row whose maximum is infinite is shifted by 0 instead (``rt.row_shift``):
    its logsumexp is then +-inf (or NaN) as it should be, not NaN from inf - inf. A
    ``shifted`` argument (see ``_at_most_zero``) needs no maximum of its own:
    its shift was the row's (or 0 in a row that is not finite).
    """
    name = statement.symbol.name
    exps, sums = logsumexp_parts(statement.symbol)
    argument = printer.doprint(statement.expr)
    if shifted:
        return [f"{exps} = rt.exp({argument})", f"{sums} = rt.row_sum({exps}, axis)", f"{name} = mx.log({sums})"]
    return [
        f"{name}_max = rt.row_shift({argument}, axis)",
        f"{exps} = rt.exp({printer.parenthesize(statement.expr, PRECEDENCE['Add'])} - {name}_max)",
        f"{sums} = rt.row_sum({exps}, axis)",
        f"{name} = {name}_max + mx.log({sums})",
    ]


def _print_reduction(printer, statement, element, targets, names):
    reduction = statement.reduction
    argument = printer.doprint(statement.expr)
    if reduction.kind != "gather":
        return _REDUCERS[reduction.kind](argument)
    target = reduction.target
    if targets[target] == "probabilities":
        # The expectation sums over the target's support: a probability of exactly 0
        # contributes 0 even where the value is infinite (a -inf logit).
        t = names[target]
        weighted = printer.parenthesize(statement.expr, PRECEDENCE["Mul"])  # t * (1 - p), not t * 1 - p
        return f"rt.row_sum(mx.where({t} == 0, 0.0, {t} * {weighted}), axis)"
    if not (statement.expr.free_symbols & element):
        return argument  # a row-level value is the same at every class
    return f"mx.take_along_axis({argument}, {target.name}_index, axis=axis)"
