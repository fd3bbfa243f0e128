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

from .ir import COTANGENT, ROW_LENGTH, ElementwiseIR, GradientAlias, Reduction, RowwiseIR, Variant
from .lattice import derive_lattice
from .shift import shift_rows
from .spec import functions as fn
from .spec.dag import dag_map, is_large
from .spec.terms import collect_terms, expand_terms
from .spec.validate import check_constructs, check_formula
from .spec.vocabulary import ROW_REDUCTIONS, Input, Loss, SpecError, is_element_level


def derive(loss: Loss) -> list[Variant]:
    """A loaded spec in, one :class:`Variant` (flag values and their IR) per flag combination out.

    The formula is validated first (``spec.validate``); a problem raises a
    :class:`SpecError`. Gradients are exact symbolic derivatives, and the
    spec's named terms are put back into every derived expression.

    A recurrence loss (``Alignment.recurrence``) is derived by ``lattice``: its
    moves and their transpose, the backward recursion.
    """
    if loss.kind == "recurrence":
        return derive_lattice(loss)
    formula = expand_terms(loss.formula)
    check_formula(loss, formula)
    terms = collect_terms(loss.formula)
    variants = []
    for values in itertools.product((True, False), repeat=len(loss.flags)):
        flags = {flag.name: value for flag, value in zip(loss.flags, values)}
        resolved = fn.stable_rewrite(_resolve_flags(formula, flags))
        if loss.kind == "elementwise":
            ir, shifted = _derive_elementwise(loss, resolved), []
        else:
            ir, shifted = _derive_rowwise(loss, resolved)
        _check_derived(ir)
        variants.append(Variant(flags, _abstract_terms(ir, shifted + terms)))
    return variants


def _check_derived(ir):
    """The derived expressions hold only what the printers know (a safety net)."""
    for expr in ir.expressions():
        try:
            check_constructs(expr)
        except SpecError as error:
            raise SpecError(f"the derived gradient cannot be printed: {error}") from None


def _resolve_flags(expr, flags):
    return expr.replace(
        lambda e: isinstance(e, fn.Select),
        lambda e: e.args[1] if flags[e.args[0].name] else e.args[2],
    )


# ---------------------------------------------------------------- gradients

def _clean(expr):
    """Drop distributional derivatives: d sign(u)/du is 0 away from u = 0."""
    return dag_map(expr, lambda e: sp.Integer(0) if isinstance(e, (sp.DiracDelta, sp.Heaviside)) else e)


def _d(expr, symbol):
    # powsimp turns d|u|^p = p |u|^p sign(u) / |u| into p |u|^(p-1) sign(u): no 0/0 at u = 0.
    if not is_large(expr):
        return sp.powsimp(_clean(sp.diff(expr, symbol)))
    derivative = _clean(_dag_diff(expr, symbol))
    return dag_map(derivative, lambda e: sp.powsimp(e) if e.is_Mul and any(
        isinstance(f.as_base_exp()[0], sp.Abs) for f in e.args) else e)


def _dag_diff(expr, symbol):
    """``d expr / d symbol`` by the chain rule once per distinct subexpression (``sp.diff`` repeats
    it for every use of a shared one: exponential time in a formula's nesting)."""
    depends, derivatives = {}, {}

    def has(node):
        if node not in depends:
            depends[node] = node == symbol or any(has(a) for a in node.args if isinstance(a, sp.Basic))
        return depends[node]

    def d(node):
        if node in derivatives:
            return derivatives[node]
        if not has(node):
            result = sp.Integer(0)
        elif node == symbol:
            result = sp.Integer(1)
        elif node.is_Add:
            result = sp.Add(*[d(a) for a in node.args])
        elif node.is_Mul:
            result = sp.Add(*[d(a) * sp.Mul(*node.args[:i], *node.args[i + 1:]) for i, a in enumerate(node.args)])
        elif node.is_Pow and not has(node.exp):
            result = node.exp * node.base ** (node.exp - 1) * d(node.base)
        elif isinstance(node, sp.Piecewise):
            result = sp.Piecewise(*[(d(value), condition) for value, condition in node.args])
        elif isinstance(node, sp.Function):
            result = sp.Add(*[node.fdiff(i + 1) * d(a) for i, a in enumerate(node.args) if has(a)])
        else:
            result = sp.diff(node, symbol)
        derivatives[node] = result
        return result

    return d(expr)


def _aliases(formula, inputs):
    """Gradients that are another's negation or copy: ``d/dy f(x - y) = -d/dx f(x - y)``.

    Decided on the formula, not by expanding the gradients' difference (its
    size grows exponentially with the formula's nesting): ``f(x, y)`` is a
    function of ``x - y`` when putting ``x = u + y`` leaves no ``y``; of
    ``x + y`` when ``x = u - y`` does.
    """
    aliases, u = [], sp.Dummy("u", real=True)
    for index, item in enumerate(inputs):
        for source in inputs[:index]:
            if any(a.name == source.name for a in aliases):
                continue
            sign = next((sign for sign in (-1, 1) if item not in formula.subs(source, u - sign * item).free_symbols),
                        None)
            if sign is not None:
                aliases.append(GradientAlias(item.name, source.name, sign))
                break
    return aliases


def _derive_elementwise(loss, formula):
    gradients = {
        item.name: COTANGENT * _d(formula, item)
        for item in loss.inputs if item.differentiable
    }
    return ElementwiseIR(formula, gradients, _aliases(formula, [i for i in loss.inputs if i.differentiable]))


def _derive_rowwise(loss, formula):
    formula, shifts, shifted = shift_rows(loss, formula)  # the shifts are constants: the loss does not depend on them
    epilogue, forward = _extract_reductions(formula)
    element_inputs = [i for i in loss.inputs if is_element_level(i) and i.differentiable]
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
            if reduction.kind == "gather" and reduction.target == item:
                # d gather(g, t) / d t_j = g_j (probability targets), g relative to the row's shift as
                # mlx.nn.losses takes it (cross_entropy's d/dt is -(z - max z)): t sums to 1
                total += adjoint_of[reduction.symbol] * reduction.argument
        element_gradients[item.name] = total

    row_gradients = {}
    for item in row_inputs:
        total = COTANGENT * _d(epilogue, item)
        for reduction in forward:
            partial = _d(reduction.argument, item)
            if partial != 0:
                total += adjoint_of[reduction.symbol] * _linearised(reduction, partial, weights, backward)
        row_gradients[item.name] = total

    return RowwiseIR(shifts + forward, epilogue, backward, adjoints, element_gradients, row_gradients), shifted


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
    if any(is_element_level(s) for s in argument.free_symbols):
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
    if not any(is_element_level(s) for s in partial.free_symbols) and reduction.kind != "max":
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
            expr = expr.subs(expand_terms(term.definition), term)
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
    definition = expand_terms(term.definition)
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

