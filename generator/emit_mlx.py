"""The MLX backend: the context ``templates/mlx/loss.py.j2`` renders.

Forward and backward bodies are printed from the scheduled IR; everything
around them (checks, reduction, weights, ignored rows, custom_function
wiring) is fixed structure in the template.
"""

from __future__ import annotations


from .derive import collect_terms, used_terms
from .ir import COTANGENT, ElementwiseIR
from .lower import schedule
from .printers.mlx import print_program
from .spec import ClassTarget, Input


def _definitions(expressions, terms):
    return {t: t.definition for t in used_terms(expressions, terms)}


def _names(loss, target_form):
    names = {}
    for target in loss.class_targets:
        names[target] = f"{target.name}_onehot" if target_form == "indices" else target.name
    return names


def elementwise_variant(loss, variant):
    ir: ElementwiseIR = variant.ir
    terms = collect_terms(loss.formula)
    arrays = set(loss.inputs)
    like = loss.inputs[0].name
    forward = schedule(_definitions([ir.loss], terms), [("loss", ir.loss)])
    aliased = {a.name for a in ir.aliases}
    computed = [(f"grad_{n}", e) for n, e in ir.gradients.items() if n not in aliased]
    backward = schedule(_definitions([e for _, e in computed], terms), computed)
    return {
        "suffix": variant.suffix,
        "flags": variant.flags,
        "forward_lines": print_program(forward, {}, arrays, like=like),
        "backward_lines": print_program(backward, {}, arrays | {COTANGENT}, like=like, nan_guard=False),
        "computed_gradients": [n for n, _ in computed],
        "aliases": ir.aliases,
        "residuals": [],
        "row_gradients": [],
        "target_form": None,
    }


def rowwise_variant(loss, variant, target_form):
    ir = variant.ir
    terms = collect_terms(loss.formula)
    names = _names(loss, target_form)
    arrays = set(loss.inputs)
    element = [i for i in loss.inputs if isinstance(i, ClassTarget) or not i.per_row]
    like = loss.inputs[0].name
    targets = {t: target_form for t in loss.class_targets}

    forward_defs = {r.symbol: r for r in ir.forward_reductions}
    forward_defs.update(_definitions([r.argument for r in ir.forward_reductions] + [ir.loss], terms))
    forward = schedule(forward_defs, [("loss", ir.loss)])

    outputs = [(f"grad_{n}", e) for n, e in ir.element_gradients.items()]
    outputs += [(f"grad_{n}", e) for n, e in ir.row_gradients.items()]
    backward_defs = {r.symbol: r for r in ir.backward_reductions}
    backward_defs.update(dict(ir.adjoints))
    backward_defs.update(_definitions(
        [r.argument for r in ir.backward_reductions] + [e for _, e in ir.adjoints] + [e for _, e in outputs], terms
    ))
    backward = schedule(backward_defs, outputs)

    saved = [r.symbol for r in ir.forward_reductions]
    backward_free = set().union(*(s.expr.free_symbols for s in backward)) if backward else set()
    residuals = [s.name for s in saved if s in backward_free]
    uses = lambda statements, name: any(name in {s.name for s in st.expr.free_symbols} for st in statements)
    return {
        "suffix": variant.suffix + f"_{target_form}",
        "flags": variant.flags,
        "target_form": target_form,
        "forward_lines": print_program(forward, names, arrays, element, targets, like),
        "backward_lines": print_program(backward, names, arrays | {COTANGENT} | set(saved), element, targets, like,
                                        nan_guard=False),
        "residuals": residuals,
        "computed_gradients": [n for n, _ in outputs],
        "row_gradients": [f"grad_{n}" for n in ir.row_gradients],
        "aliases": [],
        "forward_onehot": [t.name for t in loss.class_targets if uses(forward, t.name)],
        "backward_onehot": [t.name for t in loss.class_targets if uses(backward, t.name)],
    }


def context(loss, variants):
    """Everything the MLX template needs for one loss."""
    if loss.kind == "elementwise":
        rendered = [elementwise_variant(loss, v) for v in variants]
    else:
        forms = ["indices"] + (["probabilities"] if any(t.probabilities for t in loss.class_targets) else [])
        rendered = [rowwise_variant(loss, v, form) for v in variants for form in forms]
    return {
        "variants": rendered,
        "float_inputs": [i.name for i in loss.inputs if isinstance(i, Input)],
        "element_inputs": [i.name for i in loss.inputs if isinstance(i, Input) and not i.per_row],
        "row_inputs": [i.name for i in loss.inputs if isinstance(i, Input) and i.per_row],
        "differentiable": [i.name for i in loss.inputs if i.differentiable],
        "gradient_names": [f"grad_{i.name}" for i in loss.inputs if i.differentiable],
        "class_targets": loss.class_targets,
    }
