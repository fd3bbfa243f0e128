"""The MLX path's programs: the forward and backward bodies of each variant, printed.

Forward and backward bodies are printed from the scheduled IR; everything
around them (checks, reduction, weights, ignored rows, custom_function
wiring) is fixed structure in the template.
"""

from __future__ import annotations

import sympy as sp

from ...ir import COTANGENT, INSIDE_ROW, KEPT_ROW, ElementwiseIR
from ...lower.programs import elementwise_programs, rowwise_programs
from ...lower.residuals import recomputed_if_cheaper, residuals_read
from ...lower.safety import class_terms
from ...lower.schedule import inlined
from ...lower.softmax import logsumexp_numerators, logsumexp_spelled_out, softmax_read_from_sums
from ...spec.terms import expand_terms
from ...spec.vocabulary import ClassTarget, ClassWeights, Input, is_element_level
from .printer import element_level_symbols, param_name, print_program


def _names(loss, target_form):
    names = {}
    for target in loss.class_targets:
        names[target] = f"{target.name}_onehot" if target_form == "indices" else target.name
    return names


def elementwise_variant(loss, variant, printed_params):
    """The template context of one elementwise variant: its printed forward and backward."""
    ir: ElementwiseIR = variant.ir
    arrays = set(loss.inputs)
    like = loss.inputs[0].name
    forward, backward, _ = elementwise_programs(loss, ir)
    recomputing = recomputed_if_cheaper(forward, backward, element_level_symbols(forward, loss.inputs), arrays)
    always = residuals_read(forward, recomputing)  # too dear to compute again: held for every dtype
    held = [r for r in residuals_read(forward, backward) if r not in always]
    if not held:
        backward = recomputing

    def print_backward(statements):
        return print_program(statements, {}, arrays | {COTANGENT}, loss.inputs, like=like, given=forward,
                             printed_params=printed_params)

    one_at_a_time = [(name, print_backward(statements))
                     for name, statements in _one_at_a_time(loss, recomputing, len(ir.aliases))]

    return {
        "suffix": variant.suffix,
        "flags": variant.flags,
        "forward_lines": print_program(forward, {}, arrays, loss.inputs, like=like, printed_params=printed_params),
        "backward_lines": print_backward(backward),
        # the backward of half-precision inputs, which computes the forward's values again
        "recomputing_lines": print_backward(recomputing) if held else None,
        "one_at_a_time": one_at_a_time,
        "one_at_a_time_gradients": ", ".join(f"grad_{name}" for name, _ in one_at_a_time),
        "aliases": ir.aliases,
        "residuals": [r.name for r in always],
        "held_residuals": [r.name for r in held],
        "row_gradients": [],
        "returned": [f"grad_{i.name}" for i in loss.inputs if i.differentiable],
        "target_form": None,
        "on_blocks": False,
    }


def rowwise_variant(loss, variant, target_form, printed_params, on_blocks=False):
    """The template context of one row-wise variant, class targets given as ``target_form``.

    ``on_blocks``: its programs for a backward on blocks of the classes (``lower.programs.rowwise_programs``):
    the forward hands per-row values alone, for every dtype.
    """
    ir = variant.ir
    arrays = set(loss.inputs) | {KEPT_ROW, INSIDE_ROW}
    element = [i for i in loss.inputs if isinstance(i, ClassTarget) or not i.per_row]
    like = loss.inputs[0].name
    outputs, scatters = _gradient_outputs(loss, ir, target_form)
    numerators = logsumexp_numerators(ir.forward_reductions)
    forward, backward, _ = rowwise_programs(loss, ir, outputs, target_form,
                                            softmax_read_from_sums(ir.forward_reductions), numerators, on_blocks)
    forward = logsumexp_spelled_out(forward, ir.forward_reductions)
    element += numerators
    # The residual policy of row-wise losses, every dtype: per-row values are held, element-level ones computed
    # again where that is cheap (lower.residuals.recomputed_if_cheaper says why)
    backward = recomputed_if_cheaper(forward, backward, element_level_symbols(forward, element), arrays)
    per_row = residuals_read(forward, backward)
    forward = _moved_inputs_inlined(forward, set(per_row))
    backward = _moved_inputs_inlined(backward, set())
    levels = element_level_symbols(forward + backward, element)
    names = _names(loss, target_form)
    as_given = {i: f"given[{index}]" for index, i in enumerate(loss.inputs) if isinstance(i, Input)}
    uses = lambda statements, name: any(name in {s.name for s in st.expr.free_symbols} for st in statements)
    forward_lines = print_program(forward, names, arrays, element, like, printed_params=printed_params,
                                  as_given=as_given)

    def print_backward(statements, residuals):
        return print_program(statements, names, arrays | {COTANGENT} | set(residuals), element, like,
                             given=forward, printed_params=printed_params) + scatters

    # a backward that reduces no row, and adds nothing at the target's class, computes each gradient from
    # the per-row values alone: for half-precision inputs each by itself, like an elementwise loss's
    elementwise = all(s.reduction is None for s in backward) and not scatters and not ir.row_gradients
    one_at_a_time = [(name, print_backward(statements, per_row))
                     for name, statements in (_one_at_a_time(loss, backward) if elementwise else [])]

    return {
        "suffix": variant.suffix + f"_{target_form}" + ("_on_blocks" if on_blocks else ""),
        "flags": variant.flags,
        "target_form": target_form,
        "on_blocks": on_blocks,
        "forward_lines": forward_lines,
        # whether the forward reads an input as given (its maximum, its value at the class)
        "reads_given": any(code in line for code in as_given.values() for line in forward_lines),
        "backward_lines": print_backward(backward, per_row),
        "recomputing_lines": None,
        "one_at_a_time": one_at_a_time,
        "one_at_a_time_gradients": ", ".join(f"grad_{name}" for name, _ in one_at_a_time),
        "residuals": [r.name for r in per_row],
        "held_residuals": [],
        "row_gradients": [f"grad_{n}" for n in ir.row_gradients],
        "aliases": [],
        # what the backward returns for each differentiable input: class indices have no gradient
        "returned": [f"grad_{i.name}" if not (isinstance(i, ClassTarget) and target_form == "indices") else "None"
                     for i in loss.inputs if i.differentiable],
        # whether each program computes values the size of its rows (then it runs on chunks of rows)
        "element_work": [_element_work(p, levels) for p in (forward, backward)],
        "forward_onehot": [t.name for t in loss.class_targets if uses(forward, t.name)],
        "backward_onehot": [t.name for t in loss.class_targets if uses(backward, t.name)],
    }


def _moved_inputs_inlined(statements, kept):
    """``statements`` with each input moved by a row value (``shifted = logits - shift``) that only
    reductions read whole (a sum, a mean, the value at the class) or a function of it alone
    (``exp(shifted)``) written into them instead of named: under mx.compile a named array that a
    reduction reads is made whole (a float32 copy of the logits), where inlined it is fused into
    each reduction's argument (and a gather takes the input at the class, then moves it). Arithmetic keeps reading the named value:
    it is what keeps ``x - shift`` from being summed with other row values first (1e20 + 1 - 1e20).
    ``kept``: symbols read elsewhere (residuals)."""
    def moved_input(statement):
        if statement.reduction is not None or statement.output or statement.symbol in kept:
            return False
        terms = sp.Add.make_args(statement.expr)
        inputs = [t for t in terms if isinstance(t, Input) and is_element_level(t)]
        if len(terms) != 2 or len(inputs) != 1 or any(is_element_level(f) for t in terms if t not in inputs
                                                       for f in t.free_symbols):
            return False
        uses = [s for s in statements if statement.symbol in s.expr.free_symbols]
        return all(s.expr == statement.symbol and s.reduction is not None or _applied_to(s.expr, statement.symbol)
                   for s in uses)

    moved = {s.symbol for s in statements if moved_input(s)}
    return inlined(statements, lambda s: s.symbol in moved)


def _one_at_a_time(loss, backward, aliases=0):
    """``(input name, the statements of its gradient alone)`` of each input, where the backward returns
    several gradients (see rt.one_at_a_time). One that is another's, negated (``aliases`` of them), is
    not computed but taken from that one's whole: in chunks of the rows it would be a second output."""
    outputs = {s.output: s for s in backward if s.output}
    if len(outputs) + aliases < 2:
        return []
    return [(i.name, _needed_for(backward, outputs[f"grad_{i.name}"])) for i in loss.inputs if f"grad_{i.name}" in outputs]


def _needed_for(statements, output):
    """The statements ``output`` needs, in their order."""
    by_symbol = {s.symbol: s for s in statements}
    needed, stack = set(), [output.symbol]
    while stack:
        symbol = stack.pop()
        if symbol in by_symbol and symbol not in needed:
            needed.add(symbol)
            stack.extend(by_symbol[symbol].expr.free_symbols)
    return [s for s in statements if s.symbol in needed]


def _element_work(statements, element):
    """Whether ``statements`` compute a value per element (not only an input's values read as they are)."""
    return any(s.expr.free_symbols & element and not (s.reduction is not None and s.expr.is_Symbol)
               for s in statements if s.reduction is not None or s.symbol in element)


def _applied_to(expr, symbol):
    """Whether ``expr`` is a function of ``symbol`` alone (``exp(symbol)``)."""
    return isinstance(expr, sp.Function) and expr.args == (symbol,)


def _element_level(symbol):
    """Whether ``symbol`` (a spec term: what it is made of) holds one value per element of a row."""
    return any(is_element_level(s) for s in expand_terms(symbol).free_symbols)


def _gradient_outputs(loss, ir, target_form):
    """``(outputs, scatters)``: the backward's named results, and the lines that add class terms at the target.

    With class indices a gradient term at the target's class is one value per
    row (``grad_<input>_at_<target>``), added at one element of the row.
    """
    outputs, scatters = [], []
    names = [i.name for i in loss.inputs]
    targets = {t.name for t in loss.class_targets}
    for name, gradient in ir.element_gradients.items():
        if name in targets and target_form == "indices":
            continue  # class indices are integers: no gradient
        # With class indices a term at the class is added at one element per row (``rt.add_at_class``)
        # instead of building a one-hot array the size of the input.
        dense, at_class = class_terms(gradient, _element_level) if target_form == "indices" else (gradient, {})
        if dense != 0 or not at_class:
            outputs.append((f"grad_{name}", dense))
        for index, (target, value) in enumerate(at_class.items()):
            outputs.append((f"grad_{name}_at_{target.name}", value))
            at = f"{target.name}_index, grad_{name}_at_{target.name}, axis"
            if dense == 0 and index == 0:  # zeros but one element per row, in the input's own dtype
                scatters.append(f"grad_{name} = rt.at_class(given[{names.index(name)}], {at})")
            else:
                scatters.append(f"grad_{name} = rt.add_at_class(grad_{name}, {at})")
    outputs += [(f"grad_{n}", e) for n, e in ir.row_gradients.items()]
    return outputs, scatters


def _param_args(loss, printed):
    """``(name in the compiled bodies, expression passed)`` of each parameter the bodies read.

    A float parameter is passed as a 0-d array of the compute dtype, its Python
    value too where a Python decision reads it (see printer.py).
    """
    args = []
    for param in loss.numeric_params:
        array, python = param_name(param), param_name(param, python=True)
        if array in printed:
            args.append((array, param.name if param.integer else f"rt.scalar({param.name}, compute)"))
        if python != array and python in printed:
            args.append((python, f"rt.param_value({param.name}, compute)"))
    return args


def context(loss, variants, on_blocks=False):
    """Everything the MLX template needs for one loss (``on_blocks``: its linear_ form's backward may run on
    blocks of the classes)."""
    printed = set()
    if loss.kind == "elementwise":
        rendered = [elementwise_variant(loss, v, printed) for v in variants]
    else:
        forms = ["indices"] + (["probabilities"] if any(t.probabilities for t in loss.class_targets) else [])
        rendered = [rowwise_variant(loss, v, form, printed) for v in variants for form in forms]
        # the linear_ forms' backward on tiles reads per-row values alone: where a variant's backward
        # reduces its rows, it has a second pair of programs, those reductions made in the forward
        rendered += [rowwise_variant(loss, v, form, printed, on_blocks=True)
                     for v in variants if on_blocks and v.ir.backward_reductions for form in forms]
    param_args = _param_args(loss, printed)
    return {
        "variants": rendered,
        # a row-wise loss's forward and backward run on chunks of rows where some variant's compute
        # values the size of the rows (rt.in_chunks): a gather alone needs none
        "chunked_programs": [any(v.get("element_work", [False, False])[i] for v in rendered) for i in (0, 1)],
        "param_args": param_args,
        "param_arrays": any("compute" in passed for _, passed in param_args),
        "float_inputs": [i.name for i in loss.inputs if isinstance(i, Input)],
        "element_inputs": [i.name for i in loss.inputs if is_element_level(i)],  # probability targets too
        "row_inputs": [i.name for i in loss.inputs if isinstance(i, Input) and i.per_row],
        # the arrays that chunks of rows cut (rt.in_chunks): class weights are one row's
        "chunked_inputs": [i.name for i in loss.inputs if not isinstance(i, ClassWeights)],
        "differentiable": [i.name for i in loss.inputs if i.differentiable],
        "gradient_names": [f"grad_{i.name}" for i in loss.inputs if i.differentiable],
        "class_targets": loss.class_targets,
    }
