"""Numerical safety as rewrites of the scheduled program, so every backend prints the same safe program.

Every backend applies :func:`guard` to the statements ``schedule`` gives it
(after choosing the forward values its backward reuses); the MLX printer and
the C printer (Metal, CUDA) then print what they are given, and a NaN, an
infinity or an exact 0 meets the same operations on every backend.

* **A mask multiplies only a finite value.** ``u * (c ? v : 0)`` is
  ``c ? u*v : 0`` where ``u`` may be infinite: a branch not taken
  contributes 0, not ``inf * 0``.
* **NaN in, NaN out** (the loss's own program, ``propagate_nan``): a
  comparison with NaN is false both ways, so a selection would silently take
  its last branch (a hinge of NaN would be 0). Each selection gets a last
  branch of NaN, taken where none of its conditions holds either way. The
  gradients keep the last branch, as MLX's autodiff of ``where`` does.
  Selections that are a maximum or a minimum become ``Max``/``Min``, which
  propagate NaN on every backend.
* **A masked logit has probability 0**: a softmax weight ``exp(g - logsumexp)``
  is 0 where ``g = -inf``, also in a row of nothing but -inf.
* **0 * inf is 0 where the 0 is exact.** A product of arrays with a factor
  ``exp(u)`` is 0 where ``u = -inf`` (or the exponential is 0): ``0 log 0 = 0``
  (a log-probability of -inf). A parameter that scales a product and is 0
  removes it (``label_smoothing = 0`` against a ``-inf`` logit), and so does
  a factor of data that is 0 (an Input not differentiated) against a value
  that is infinite (and may be where the inputs are finite): a relevance label
  of 0 against a masked logit's ``logsumexp - logit``. Against NaN it stays NaN.
* **Masked rows** (:func:`masked_rows`, class indices): a row whose class
  is the ignore_index has loss and gradients 0, whatever its values (a row of
  -inf logits included); a row whose class is outside the row has NaN loss
  and gradients, and nothing is read at that class.
* **Probability targets** (:func:`expectations`): the gather at a class
  becomes the expectation over the target's row, in which a probability of
  exactly 0 contributes 0 even against an infinite value.
"""

from __future__ import annotations

import sympy as sp
from sympy.core.relational import Relational
from sympy.functions.elementary.piecewise import ExprCondPair

from ..ir import COUNTED_ROW, INSIDE_ROW, KEPT_ROW, ROW_FILL, ROW_LENGTH, IsInfinite, IsMinusInfinity, Reduction
from ..spec.vocabulary import ClassTarget, Input, Param, is_element_level
from .rewrite import extremum
from .schedule import Statement


def guard(statements, *, propagate_nan, given=(), exponentials=()):
    """``statements`` with the rules above applied.

    ``given`` are statements computed before them that they read;
    ``exponentials`` symbols they read that hold an ``exp`` computed elsewhere.
    """
    rules = _Rules(list(given) + list(statements), propagate_nan, exponentials)
    return [type(s)(s.symbol, rules.apply(s.expr), s.reduction, s.output) for s in statements]


def expectations(statements):
    """Gathers at a probability target as sums over the row: ``sum(t == 0 ? 0 : t * value)``."""
    result = []
    for s in statements:
        if s.reduction is not None and s.reduction.kind == "gather":
            target = s.reduction.target
            expr = sp.Piecewise((0, sp.Eq(target, 0)), (target * s.expr, True))
            s = type(s)(s.symbol, expr, Reduction(s.symbol, "sum", expr), s.output)
        result.append(s)
    return result


def masked_rows(statements, *, ignoring):
    """The program's outputs (the loss, the gradients) selected on ``INSIDE_ROW`` and, ``ignoring``, ``KEPT_ROW``.

    One selection per element: the row's condition and the value it gives
    otherwise are computed once per row (``COUNTED_ROW``, ``ROW_FILL``). A
    gradient that is only a term at the class (``coefficient * onehot``) is
    selected at the class alone: a row whose class is outside it is NaN where
    the loss reads it (nll_loss: the one element its stand-in index 0 reads;
    cross_entropy: the whole row), and no pass writes NaN over a row the loss
    never read (twice the time of nll_loss's value_and_grad).
    """
    if not any(s.output for s in statements):
        return list(statements)
    head, counted, fill = [], INSIDE_ROW, sp.nan
    if ignoring:
        head = [Statement(COUNTED_ROW, sp.And(KEPT_ROW, INSIDE_ROW)),
                Statement(ROW_FILL, selection((0, sp.Not(KEPT_ROW)), (sp.nan, sp.true)))]
        counted, fill = COUNTED_ROW, ROW_FILL
    element = _element_symbols(statements)

    def masked_output(expr):
        dense, at_class = class_terms(expr, lambda s: s in element)
        if dense != 0 or not at_class:  # (a dense term reads the whole row: all of it is NaN)
            return selection((expr, counted), (fill, sp.true))
        terms = [selection((selection((coefficient, counted), (fill, sp.true)), sp.Eq(target, 1)), (0, sp.true))
                 for target, coefficient in at_class.items()]  # the one-hot: 0 elsewhere, even beside a NaN
        return sp.Add(*terms, evaluate=False) if len(terms) > 1 else terms[0]

    return head + [Statement(s.symbol, masked_output(s.expr), s.reduction, s.output) if s.output else s
                   for s in statements]


def _element_symbols(statements):
    """The element-level symbols of a program: element inputs and what is computed from them, reductions aside."""
    element = {f for s in statements for f in s.expr.free_symbols if is_element_level(f)}
    for statement in statements:
        if statement.reduction is None and statement.expr.free_symbols & element:
            element.add(statement.symbol)
    return element


def class_terms(gradient, is_element):
    """``(dense, {target: coefficient})`` with ``gradient = dense + sum_t coefficient_t * onehot_t`` and each
    coefficient one value per row (no symbol for which ``is_element`` holds), else ``(gradient, {})``."""
    at_class = {}
    for target in sorted((f for f in gradient.free_symbols if isinstance(f, ClassTarget)), key=str):
        if _in_a_condition(gradient, target):
            return gradient, {}  # d/dtarget would not see it (SymPy differentiates a Piecewise's branches alone)
        coefficient = sp.diff(gradient, target)
        if target in coefficient.free_symbols or any(is_element(f) for f in coefficient.free_symbols):
            return gradient, {}
        at_class[target] = coefficient
    dense = gradient.subs({target: 0 for target in at_class})
    return dense, at_class


def _in_a_condition(expr, symbol):
    """Whether ``symbol`` is read by a condition of a selection in ``expr`` (the tie of a maximum at the class)."""
    return any(isinstance(node, sp.Piecewise) and any(symbol in condition.free_symbols for _, condition in node.args)
               for node in sp.preorder_traversal(expr))


def is_finite(expr, is_scalar, finite):
    """Finite wherever the ``finite`` symbols are: built from them by +, |.|, sign and products by scalars.

    A product of two arrays (a power of one) is not: 1e30 * 1e30 overflows float32.
    """
    for node in sp.preorder_traversal(expr):
        if is_scalar(node):
            continue
        if isinstance(node, sp.Mul) and sum(not is_scalar(f) for f in node.args) > 1:
            return False
        if isinstance(node, sp.Symbol):
            if node not in finite:
                return False
        elif not isinstance(node, (sp.Add, sp.Mul, sp.Number, sp.Abs, sp.sign)):
            return False
    return True


class _Rules:
    """What the rules need to know of a program: scalars, finite values, named comparisons and exponentials."""

    def __init__(self, known, propagate_nan, exponentials):
        self.propagate_nan = propagate_nan
        self.scalars = {ROW_LENGTH}
        for s in known:
            if s.reduction is None and all(isinstance(f, Param) or f in self.scalars for f in s.expr.free_symbols):
                self.scalars.add(s.symbol)
        self.conditions = {s.symbol: s.expr for s in known if isinstance(s.expr, Relational)}
        # Element values relative to a logsumexp: an exp of one is a softmax weight (see zero_where).
        self.logsumexps = {s.symbol for s in known if s.reduction is not None and s.reduction.kind == "logsumexp"}
        self.element = {f for s in known for f in s.expr.free_symbols if is_element_level(f)}
        self.data = {f for f in self.element if isinstance(f, Input) and not f.differentiable}
        for s in known:
            if s.reduction is None and s.expr.free_symbols & self.element:
                self.element.add(s.symbol)
        # symbol holding an exponential -> where it is exactly 0
        self.zero_when = {e: sp.Eq(e, 0) for e in exponentials}
        for s in known:
            if s.reduction is not None:
                continue
            if isinstance(s.expr, sp.exp):
                logit = self.softmax_logit(s.expr.args[0])
                self.zero_when[s.symbol] = sp.Eq(s.symbol, 0) if logit is None else IsMinusInfinity(logit)
            elif isinstance(s.expr, sp.Mul) and not self.is_scalar(s.expr):
                # a product with such a factor (the MLX path's softmax weight e / s) is 0 where it is
                zero = [self.zero_when[f] for f in s.expr.args if f in self.zero_when]
                zero += [self.zero_where(f) for f in s.expr.args if isinstance(f, sp.exp)]
                if zero:
                    self.zero_when[s.symbol] = sp.Or(*zero)
        defined = {s.symbol for s in known}
        self.finite = set().union(*(s.expr.free_symbols for s in known)) - defined if known else set()
        for s in known:
            if s.reduction is not None and s.reduction.kind == "logsumexp":
                continue
            if self.is_finite(s.expr):
                self.finite.add(s.symbol)

    def zero_where(self, exponential):
        """Where ``exp(u)`` is exactly 0: ``u = -inf``; for a softmax weight ``exp(g - logsumexp)``, ``g = -inf``.

        A softmax weight is the probability of its logit ``g``: 0 where the
        logit is masked (-inf), also in a row of nothing but -inf (where
        ``g - logsumexp`` is NaN); where the logsumexp is +inf because of
        another logit, ``exp(g - inf)`` is 0 but not exactly: the product is
        NaN there, as MLX's autodiff gives.
        """
        logit = self.softmax_logit(exponential.args[0])
        return IsMinusInfinity(exponential.args[0] if logit is None else logit)

    def softmax_logit(self, exponent):
        """``g`` for an exponent ``g - logsumexp`` (element values relative to a row's logsumexp), else None."""
        if not (exponent.free_symbols & self.element and exponent.free_symbols & self.logsumexps):
            return None
        return sp.Add(*[t for t in sp.Add.make_args(exponent) if t.free_symbols & self.element])

    def is_scalar(self, expr):
        return all(isinstance(f, Param) or f in self.scalars for f in expr.free_symbols)

    def is_finite(self, expr):
        return is_finite(expr, self.is_scalar, self.finite)

    def apply(self, expr):
        expr = _bottom_up(expr, self.extrema)
        expr = _bottom_up(expr, self.selected_products)
        if self.propagate_nan:
            expr = _bottom_up(expr, self.nan_branch)
        expr = _bottom_up(expr, self.exact_zeros, with_original=True)
        return _decided(_bottom_up(expr, self.masked_logits))

    def masked_logits(self, expr):
        """A softmax weight ``exp(g - logsumexp)`` is 0 where its logit ``g`` is -inf (see zero_where),
        also in a row of nothing but -inf, where ``g - logsumexp`` is NaN."""
        if not isinstance(expr, sp.exp):
            return expr
        logit = self.softmax_logit(expr.args[0])
        return expr if logit is None else selection((0, IsMinusInfinity(logit)), (expr, sp.true))

    def extrema(self, expr):
        """``a > b ? a : b`` -> ``Max(a, b)``: NaN if either is NaN on every backend (a selection gives ``b``)."""
        if not isinstance(expr, sp.Piecewise):
            return expr
        chosen = extremum(expr, self.conditions)
        if chosen is None:
            return expr
        function, first, second = chosen
        return (sp.Max if function == "max" else sp.Min)(first, second, evaluate=False)

    def selected_products(self, expr):
        """``u * (c ? v : 0)`` -> ``c ? u*v : 0`` where a factor may be infinite."""
        if not isinstance(expr, sp.Mul) or self.is_scalar(expr):
            return expr
        values = [(masked(f) or (f,))[0] for f in expr.args]
        if all(self.is_finite(v) for v in values) and not self.propagate_nan:
            return expr
        for factor in expr.args:
            selected = masked(factor)
            if selected is not None and not self.is_scalar(factor):
                rest = sp.Mul(*[f for f in expr.args if f is not factor])
                return sp.Piecewise((self.selected_products(rest * selected[0]), selected[1]), (0, True))
        return expr

    def nan_branch(self, expr):
        """A selection on arrays whose conditions all fail (a NaN compared) gives NaN."""
        if not isinstance(expr, sp.Piecewise) or expr.args[-1][1] != sp.true:
            return expr
        *branches, (last, _) = expr.args
        if all(self.is_scalar(c) for _, c in branches):
            return expr
        if any(value == sp.nan for value, _ in expr.args):
            return expr
        held = sp.to_nnf(sp.And(*[sp.Not(c.xreplace(self.conditions)) for _, c in branches]))
        # NaN != y is true: "not equal" must be "less or greater" to be false for a NaN.
        held = held.replace(lambda e: isinstance(e, sp.Ne),
                            lambda e: sp.Or(sp.StrictLessThan(e.lhs, e.rhs), sp.StrictGreaterThan(e.lhs, e.rhs)))
        return selection(*branches, (last, held), (sp.nan, True))

    def exact_zeros(self, expr, original):
        """A product of arrays is 0 where an exponential factor is exactly 0, or a factor of data, or a
        scaling parameter is 0.

        The exponent compared is the one before these rules (they only turn a NaN into 0, never into -inf).
        """
        if not isinstance(expr, sp.Mul) or self.is_scalar(expr):
            return expr
        guarded = expr
        arrays = [f for f in original.args if not self.is_scalar(f)]
        if len(arrays) > 1:
            # exp(-inf) = 0 is the case to catch (a finite exponent makes the other factor finite too)
            zero = [self.zero_where(f) for f in arrays if isinstance(f, sp.exp)]
            zero += [self.zero_when[f] for f in arrays if f in self.zero_when]
            for f in arrays:
                rest = sp.Mul(*[g for g in arrays if g is not f])
                if f in self.data and not self.is_finite(rest):  # 0 * NaN stays NaN
                    zero.append(sp.And(sp.Eq(f, 0), IsInfinite(rest)))
            if zero:
                guarded = sp.Piecewise((0, sp.Or(*zero)), (guarded, True))
        params = [f for f in expr.args if isinstance(f, Param) and f.range.contains(0)]
        if params:
            guarded = sp.Piecewise((0, sp.Or(*[sp.Eq(p, 0) for p in params])), (guarded, True))
        return guarded


def selection(*branches):
    """``Piecewise(*branches)`` as given. SymPy would undo the rules: drop a NaN branch it proves
    unreachable (``x < 1`` or ``x >= 1`` holds for every real ``x``), turn a comparison of a
    selection into a selection of comparisons."""
    pairs = [sp.Basic.__new__(ExprCondPair, *map(sp.sympify, branch)) for branch in branches]
    return sp.Basic.__new__(sp.Piecewise, *pairs)


def _bottom_up(expr, rule, with_original=False):
    """``expr`` rebuilt with ``rule`` applied to every node, children first (``rule(node, original)``
    with ``with_original``)."""
    if expr.is_Atom or not expr.args:
        return rule(expr, expr) if with_original else rule(expr)
    rebuilt = _rebuilt(expr, [_bottom_up(a, rule, with_original) if isinstance(a, sp.Basic) else a for a in expr.args])
    return rule(rebuilt, expr) if with_original else rule(rebuilt)


def _rebuilt(expr, args):
    """``expr`` with ``args`` in place of its own, built as the passes build (selections unevaluated)."""
    if not any(a is not b for a, b in zip(args, expr.args)):
        return expr
    if isinstance(expr, sp.Piecewise):
        return selection(*[pair.args for pair in args])
    if isinstance(expr, ExprCondPair):
        return sp.Basic.__new__(ExprCondPair, *args)
    if isinstance(expr, Relational):
        return expr.func(*args, evaluate=False)
    return expr.func(*args)


def _decided(expr, known=()):
    """``expr`` with each selection on a condition that an enclosing selection has decided replaced
    by the branch it picks: ``c ? 0 : d * (c ? 0 : e)`` is ``c ? 0 : d * e``, as the guards above
    nest them. Each selection is an operation on every element, and under ``mx.compile`` a chain
    longer than MLX fuses (11 operations) is cut, its middle made whole."""
    if isinstance(expr, sp.Piecewise) and len(expr.args) == 2 and expr.args[1][1] == sp.true:
        (first, condition), (second, _) = expr.args
        for decided, value in known:
            if decided == condition:
                return _decided(first if value else second, known)
        return selection((_decided(first, known + ((condition, True),)), condition),
                         (_decided(second, known + ((condition, False),)), sp.true))
    if expr.is_Atom or not expr.args:
        return expr
    return _rebuilt(expr, [_decided(a, known) if isinstance(a, sp.Basic) else a for a in expr.args])


def masked(expr):
    """``(value, condition)`` for ``Piecewise((value, condition), (0, True))`` (or with 0 first)."""
    if not isinstance(expr, sp.Piecewise) or len(expr.args) != 2:
        return None
    (first, condition), (second, _) = expr.args
    if second == 0:
        return first, condition
    if first == 0:
        return second, sp.Not(condition)
    return None
