"""Derivation: from a spec's formula to the kernel IR, gradients included.

Gradients are taken by ``sympy.diff`` on the formula, never traced. For
row-wise losses the chain rule runs through the row reductions by reverse
accumulation: each reduction ``R_k = reduce_j g_k(x_j, R_<k)`` gets an
adjoint ``dL/dR_k = dh/dR_k + sum_l dL/dR_l * reduce'_l(dg_l/dR_k)``, where
``reduce'`` is the linearisation of the reduction (a sum, a mean, a softmax
weighting for logsumexp, the target's one-hot for a gather, the tied maxima
for a max); then ``dL/dx_j = sum_k dL/dR_k * weight_k(j) * dg_k/dx_j``.
"""

from __future__ import annotations

import itertools

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from . import functions as fn
from .ir import COTANGENT, ROW_LENGTH, ElementwiseIR, GradientAlias, Reduction, RowwiseIR, Variant
from .printers.c import c_name
from .spec import ROW_REDUCTIONS, ClassTarget, Flag, Gather, Input, Loss, Param, SpecError, Term

# Functions a formula may use; every backend printer knows each of them.
ALLOWED_FUNCTIONS = (
    sp.exp, sp.log, sp.Abs, sp.sign, sp.tanh, sp.cosh, sp.sinh, sp.sin, sp.cos, sp.atan, sp.erf,
    sp.Piecewise, log1p, expm1, fn.sigmoid, fn.softplus, fn.logaddexp, fn.logcosh, fn.Select,
) + ROW_REDUCTIONS


def derive(loss: Loss) -> list[Variant]:
    """Validate ``loss``'s formula and derive one IR per flag combination."""
    formula = _expand_terms(loss.formula)
    _validate(loss, formula)
    terms = collect_terms(loss.formula)
    variants = []
    for values in itertools.product((True, False), repeat=len(loss.flags)):
        flags = {flag.name: value for flag, value in zip(loss.flags, values)}
        resolved = fn.stable_rewrite(_resolve_flags(formula, flags))
        if loss.kind == "elementwise":
            ir = _derive_elementwise(loss, resolved)
        else:
            ir = _derive_rowwise(loss, resolved)
        _check_derived(ir)
        variants.append(Variant(flags, _abstract_terms(ir, terms)))
    return variants


# ---------------------------------------------------------------- validation

def _expand_terms(expr):
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


# ITE(c, a, b) appears when SymPy folds a Piecewise into a condition (relu(minimum(...)) > 0)
_BOOLEANS = (sp.core.relational.Relational, sp.And, sp.Or, sp.Not, sp.ITE, sp.logic.boolalg.BooleanAtom)
_NON_DIFFERENTIABLE = (
    sp.floor, sp.ceiling, sp.frac, sp.Mod, sp.Heaviside, sp.DiracDelta, sp.Max, sp.Min, sp.re, sp.im, sp.arg,
)


def _check_constructs(expr):
    """Refuse anything the backends cannot print or differentiate (a whitelist).

    Symbols pass here; that a formula's symbols are declared is checked by
    ``_validate``.
    """

    def visit(node, condition):
        if isinstance(node, sp.Symbol):
            return
        if isinstance(node, sp.Number):
            if not (node.is_real and node.is_finite):
                raise SpecError(f"the number {node} is not a finite real number")
            return
        if node in (sp.pi, sp.E):
            return
        if isinstance(node, _BOOLEANS):
            if not condition:
                raise SpecError(f"the comparison or logic {node} may only be a Piecewise condition")
            for arg in node.args:
                visit(arg, isinstance(node, (sp.And, sp.Or, sp.Not, sp.ITE)))
            return
        if condition:
            raise SpecError(f"{node} is not a condition (a comparison such as x > 0)")
        if isinstance(node, sp.Piecewise):
            if node.args[-1].cond != sp.true:
                raise SpecError(f"Piecewise {node} needs a last branch (value, True) for the remaining cases")
            for value, cond in node.args:
                visit(value, False)
                visit(cond, True)
            return
        if isinstance(node, _NON_DIFFERENTIABLE):
            hint = {
                "Max": "; use maximum(a, b) (MLX's tie convention: the gradient at a tie goes to b) or a Piecewise",
                "Min": "; use minimum(a, b) (MLX's tie convention: the gradient at a tie goes to b) or a Piecewise",
                "Heaviside": "; write the step as a Piecewise",
            }.get(type(node).__name__, "")
            raise SpecError(f"{type(node).__name__} has no gradient rule here{hint}")
        if isinstance(node, sp.Function):
            if not isinstance(node, ALLOWED_FUNCTIONS):
                raise SpecError(
                    f"function {type(node).__name__!r} is not supported (the backends print and differentiate only: "
                    + ", ".join(sorted(f.__name__ for f in ALLOWED_FUNCTIONS)) + ")"
                )
        elif not isinstance(node, (sp.Add, sp.Mul, sp.Pow)):
            raise SpecError(f"{type(node).__name__} ({node}) is not supported in a loss formula")
        for arg in node.args:
            visit(arg, False)

    visit(expr, False)


def _validate(loss, formula):
    _check_constructs(formula)
    declared = set(loss.declarations)
    for symbol in formula.free_symbols:
        if symbol not in declared:
            raise SpecError(f"symbol {symbol.name!r} is used in the formula but not declared in inputs or params")
        if symbol is loss.weights:
            raise SpecError(f"weights {symbol.name!r} are applied by the generator; leave them out of the formula")
        if isinstance(symbol, Param) and symbol.optional:
            raise SpecError(
                f"parameter {symbol.name!r} has no default value (None), so the formula cannot use it; "
                "an optional parameter can only be a ClassTarget's ignore_index"
            )
    names = {d.name for d in loss.declarations}
    for term in collect_terms(loss.formula):
        if term.name in names:
            raise SpecError(f"term name {term.name!r} is already used by another term or declaration")
        names.add(term.name)
    in_kernels = {}
    for name in sorted(names):  # the kernels rename what C++ reserves ("value" -> "value_"): still distinct?
        other = in_kernels.setdefault(c_name(name), name)
        if other != name:
            raise SpecError(f"names {other!r} and {name!r} are the same identifier in the generated kernels")
    for node in sp.preorder_traversal(formula):
        if isinstance(node, fn.Select) and not isinstance(node.args[0], Flag):
            raise SpecError(f"Select's first argument must be a Flag, got {node.args[0]}")
        if isinstance(node, Gather) and not isinstance(node.args[1], ClassTarget):
            raise SpecError(f"Gather's second argument must be a ClassTarget, got {node.args[1]}")
    outside = formula.replace(lambda e: isinstance(e, fn.Select), lambda e: e.args[1] + e.args[2])
    for flag in loss.flags:
        if flag in outside.free_symbols:
            raise SpecError(f"flag {flag.name!r} may only appear as Select({flag.name}, if_true, if_false)")
    reductions = [n for n in sp.preorder_traversal(formula) if isinstance(n, ROW_REDUCTIONS)]
    if loss.kind == "elementwise":
        if reductions:
            raise SpecError(f"{type(reductions[0]).__name__} is a row reduction: declare the loss with row= and axis=")
        if loss.class_targets:
            raise SpecError("class targets need a row-wise loss (row= and axis=)")
        for item in loss.inputs:
            if item.per_row:
                raise SpecError(f"input {item.name!r} is per_row but the loss is elementwise")
    else:
        outside = formula.replace(lambda e: isinstance(e, ROW_REDUCTIONS), lambda e: sp.Integer(0))
        for symbol in outside.free_symbols:
            if _is_element_level(symbol):
                raise SpecError(
                    f"element input {symbol.name!r} is used outside a row reduction; "
                    "wrap it in RowSum, RowMean, RowMax, LogSumExp or Gather"
                )
        if not reductions:
            raise SpecError("a row-wise loss needs at least one row reduction (RowSum, LogSumExp, Gather, ...)")


def _check_derived(ir):
    """The derived expressions hold only what the printers know (a safety net)."""
    if isinstance(ir, ElementwiseIR):
        expressions = [ir.loss, *ir.gradients.values()]
    else:
        expressions = [ir.loss, *(r.argument for r in ir.forward_reductions + ir.backward_reductions),
                       *(e for _, e in ir.adjoints), *ir.element_gradients.values(), *ir.row_gradients.values()]
    for expr in expressions:
        try:
            _check_constructs(expr)
        except SpecError as error:
            raise SpecError(f"the derived gradient cannot be printed: {error}") from None


def _is_element_level(symbol):
    return isinstance(symbol, ClassTarget) or (isinstance(symbol, Input) and not symbol.per_row)


def _resolve_flags(expr, flags):
    return expr.replace(
        lambda e: isinstance(e, fn.Select),
        lambda e: e.args[1] if flags[e.args[0].name] else e.args[2],
    )


# ---------------------------------------------------------------- gradients

def _clean(expr):
    """Drop distributional derivatives: d sign(u)/du is 0 away from u = 0."""
    return expr.replace(lambda e: isinstance(e, (sp.DiracDelta, sp.Heaviside)), lambda e: sp.Integer(0))


def _d(expr, symbol):
    # powsimp turns d|u|^p = p |u|^p sign(u) / |u| into p |u|^(p-1) sign(u): no 0/0 at u = 0.
    return sp.powsimp(_clean(sp.diff(expr, symbol)))


def _is_zero(expr):
    expr = sp.piecewise_fold(expr)
    if isinstance(expr, sp.Piecewise):
        return all(_is_zero(branch) for branch, _ in expr.args)
    return sp.expand(expr) == 0


def _aliases(gradients):
    """Gradients that are another's negation or copy (e.g. d/dy f(x - y))."""
    aliases, names = [], list(gradients)
    for i, name in enumerate(names):
        for source in names[:i]:
            if any(a.name == source for a in aliases):
                continue
            for sign in (-1, 1):
                if _is_zero(gradients[name] - sign * gradients[source]):
                    aliases.append(GradientAlias(name, source, sign))
                    break
            if aliases and aliases[-1].name == name:
                break
    return aliases


def _derive_elementwise(loss, formula):
    gradients = {
        item.name: COTANGENT * _d(formula, item)
        for item in loss.inputs if item.differentiable
    }
    return ElementwiseIR(formula, gradients, _aliases(gradients))


def _derive_rowwise(loss, formula):
    epilogue, forward = _extract_reductions(formula)
    element_inputs = [i for i in loss.inputs if _is_element_level(i) and i.differentiable]
    row_inputs = [i for i in loss.inputs if isinstance(i, Input) and i.per_row and i.differentiable]

    backward = []
    # Linearised reduction weights for each forward reduction: weight_k(j).
    weights = {r.symbol: _reduction_weight(r, backward) for r in forward}

    adjoint_of = {}
    adjoints = []
    for index in reversed(range(len(forward))):
        reduction = forward[index]
        value = COTANGENT * _d(epilogue, reduction.symbol)
        for later in forward[index + 1:]:
            partial = _d(later.argument, reduction.symbol)
            if partial != 0:
                value += adjoint_of[later.symbol] * _linearised(later, partial, weights, backward)
        symbol = sp.Symbol(f"d_{reduction.symbol.name}", real=True)
        adjoint_of[reduction.symbol] = symbol
        adjoints.append((symbol, value))

    element_gradients = {}
    for item in element_inputs:
        total = sp.Integer(0)
        for reduction in forward:
            partial = _d(reduction.argument, item)
            if partial != 0:
                total += adjoint_of[reduction.symbol] * weights[reduction.symbol] * partial
        element_gradients[item.name] = total

    row_gradients = {}
    for item in row_inputs:
        total = COTANGENT * _d(epilogue, item)
        for reduction in forward:
            partial = _d(reduction.argument, item)
            if partial != 0:
                total += adjoint_of[reduction.symbol] * _linearised(reduction, partial, weights, backward)
        row_gradients[item.name] = total

    return RowwiseIR(forward, epilogue, backward, adjoints, element_gradients, row_gradients)


def _extract_reductions(formula):
    """Replace reductions by row symbols, innermost first, de-duplicated."""
    reductions, seen, counts = [], {}, {}

    def innermost(e):
        return isinstance(e, ROW_REDUCTIONS) and not any(
            isinstance(n, ROW_REDUCTIONS) for a in e.args for n in sp.preorder_traversal(a)
        )

    while True:
        nodes = sorted({n for n in sp.preorder_traversal(formula) if innermost(n)}, key=sp.default_sort_key)
        if not nodes:
            return formula, reductions
        mapping = {}
        for node in nodes:
            folded = _fold_row_level(node)
            if folded is not None:
                mapping[node] = folded
                continue
            key = (node.kind, node.args)
            if key not in seen:
                number = counts.get(node.kind, 0)
                counts[node.kind] = number + 1
                symbol = sp.Symbol(f"{node.kind}{number}", real=True)
                target = node.args[1] if node.kind == "gather" else None
                reductions.append(Reduction(symbol, node.kind, node.args[0], target))
                seen[key] = symbol
            mapping[node] = seen[key]
        formula = formula.xreplace(mapping)


def _fold_row_level(node):
    """A reduction of a row-level value needs no pass over the row."""
    argument = node.args[0]
    if any(_is_element_level(s) for s in argument.free_symbols):
        return None
    if node.kind == "sum":
        return ROW_LENGTH * argument
    if node.kind in ("mean", "max"):
        return argument
    if node.kind == "logsumexp":
        return argument + sp.log(ROW_LENGTH)
    return None  # a gather of a row-level value still depends on the target's form


def _reduction_weight(reduction, backward):
    """weight(j) with dR/dx_j = weight(j) * dg/dx_j."""
    if reduction.kind == "sum":
        return sp.Integer(1)
    if reduction.kind == "mean":
        return 1 / ROW_LENGTH
    if reduction.kind == "logsumexp":
        return sp.exp(reduction.argument - reduction.symbol)
    if reduction.kind == "gather":
        return reduction.target
    # max: the gradient is shared equally by every element equal to the maximum
    tied = sp.Piecewise((1, sp.Eq(reduction.argument, reduction.symbol)), (0, True))
    count = sp.Symbol(f"ties_{reduction.symbol.name}", positive=True)
    backward.append(Reduction(count, "sum", tied))
    return tied / count


def _linearised(reduction, partial, weights, backward):
    """reduce'_l(partial): the reduction's derivative applied along the row."""
    if not any(_is_element_level(s) for s in partial.free_symbols) and reduction.kind != "max":
        if reduction.kind == "sum":
            return ROW_LENGTH * partial
        if reduction.kind in ("mean", "logsumexp"):
            return partial
    if reduction.kind == "gather":
        argument, kind = partial, "gather"
    else:
        argument, kind = weights[reduction.symbol] * partial, "sum"
    symbol = sp.Symbol(f"b{len(backward)}_{reduction.symbol.name}", real=True)
    backward.append(Reduction(symbol, kind, argument, reduction.target))
    return symbol


# ---------------------------------------------------------------- named terms

def _abstract_terms(ir, terms):
    """Put the spec's named terms back into the derived expressions."""
    if not terms:
        return ir

    def abstract(expr):
        for term in reversed(terms):  # outermost first
            expr = expr.subs(_expand_terms(term.definition), term)
            expr = _refold(expr, term)
        return expr

    if isinstance(ir, ElementwiseIR):
        return ElementwiseIR(abstract(ir.loss), {k: abstract(v) for k, v in ir.gradients.items()}, ir.aliases)
    fix = lambda rs: [Reduction(r.symbol, r.kind, abstract(r.argument), r.target) for r in rs]
    return RowwiseIR(
        fix(ir.forward_reductions), abstract(ir.loss), fix(ir.backward_reductions),
        [(s, abstract(e)) for s, e in ir.adjoints],
        {k: abstract(v) for k, v in ir.element_gradients.items()},
        {k: abstract(v) for k, v in ir.row_gradients.items()},
    )


def _refold(expr, term):
    """Undo SymPy's folding of ``f(term)`` into a Piecewise when ``term`` is a Piecewise.

    SymPy rewrites ``1/Piecewise((a, c), (b, True))`` as ``Piecewise((1/a, c),
    (1/b, True))``, which hides the term and costs a selection per use. A
    Piecewise on the term's own condition is ``g(term)`` where both branches
    are the same function of the term, and ``g(term) * [c]`` where the other
    branch is 0.
    """
    definition = _expand_terms(term.definition)
    if not isinstance(definition, sp.Piecewise) or len(definition.args) != 2:
        return expr
    (on, condition), (off, _) = definition.args
    if not isinstance(condition, sp.core.relational.Relational):
        return expr

    def refold(piecewise):
        (first, cond), (second, _) = piecewise.args
        if cond not in (condition, condition.reversed):
            return piecewise
        when_on, when_off = first.subs(on, term), second.subs(off, term)
        if sp.simplify(when_on - when_off) == 0:
            return when_on
        if second == 0 and when_on != first:
            return when_on * sp.Piecewise((1, cond), (0, True))
        return piecewise

    return expr.replace(
        lambda e: isinstance(e, sp.Piecewise) and len(e.args) == 2 and e.args[1][1] == sp.true, refold
    )


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
