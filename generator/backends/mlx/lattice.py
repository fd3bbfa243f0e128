"""The MLX module of a recurrence loss (CTC's): its steps printed, rendered from ``templates/mlx/recurrence.py.j2``.

The spec's step and the backward step ``generator.lattice`` derived from it
are printed as two functions of one frame's values, ``(sequences, states)``;
the runtime ``_lattice`` runs them over the frames. The public function takes
its arguments as torch's alignment losses do (frames first, lengths per
sequence), and the loss is wired to MLX's transformations by
``mx.custom_function``: the forward's values are the backward's residuals, and
a derivative of the gradient recomputes them differentiably.
"""

from __future__ import annotations

import sympy as sp

from ... import describe
from ...lattice import local_name
from ...spec.recurrence import LatticeSymbol
from ...spec.vocabulary import Param
from ..source import docstring, header
from .printer import MLXPrinter


def _code_name(symbol, values):
    return local_name(symbol, values, "states")  # this state's class: the states array itself


def _step_lines(moves, values, params):
    """The body of one step: the shifted values and labels it reads, then the log-semiring sum of its moves."""
    names = {p: p.name for p in params}
    labels = sorted({s for m in moves for s in m.condition.free_symbols | m.weight.free_symbols
                     if isinstance(s, LatticeSymbol)}, key=lambda s: s.shift)
    lines, reads = [], []
    for label in labels:
        names[label] = _code_name(label, values)
        if label.shift:
            reads.append(f"{names[label]} = _lattice.shifted(states, {label.shift}, _lattice.NOT_A_CLASS)")
    printer = MLXPrinter(names, set(labels))
    terms = []
    for move in moves:
        read = _code_name(LatticeSymbol("previous", move.shift), values)
        if move.shift:
            lines.append(f"{read} = _lattice.shifted({values}, {move.shift}, -math.inf)")
        term = read if move.weight == 0 else f"{read} + {printer.doprint(move.weight)}"
        if move.condition != sp.true:
            term = f"mx.where({printer.doprint(move.condition)}, {term}, -math.inf)"
        terms.append(term)
    return lines + reads, f"add({', '.join(terms)})"


def render(env, loss, lattice, param_checks):
    """The source of the package's ``<loss>.py`` for a recurrence loss and its derived ``lattice``;
    ``param_checks``: the lines that check its parameters and flags (every loss's)."""
    recurrence = loss.recurrence
    alignment = recurrence.alignment
    numeric = [p for p in loss.params if isinstance(p, Param)]
    forward_lines, forward_sum = _step_lines(lattice.forward, "previous", numeric)
    backward_lines, backward_sum = _step_lines(lattice.backward, "reached", numeric)
    return env.get_template("mlx/recurrence.py.j2").render(
        header=header(loss.source),
        docstring=docstring(f"{loss.name}: generated from {loss.source}.\n\n{loss.doc.strip()}"),
        public_docstring=docstring(_describe(loss), indent="    "),
        name=loss.name,
        signature=", ".join(f"{n}={d}" if d is not None else n for n, d in describe.signature(loss)),
        inputs=[i.name for i in loss.inputs],
        params=[p.name for p in numeric],
        # a float parameter is a number: the recursions do not differentiate it
        param_checks=param_checks + [f'_lattice.check_number("{p.name}", {p.name})' for p in numeric if not p.integer],
        separator=alignment.separator.name if alignment.separator is not None else "None",
        zero_infinity=recurrence.zero_infinity.name if recurrence.zero_infinity is not None else "False",
        mean_per_label=recurrence.mean_per_label,
        forward_lines=forward_lines, forward_sum=forward_sum,
        backward_lines=backward_lines, backward_sum=backward_sum,
        step=_pretty(recurrence.step), start=repr(lattice.start), end=repr(lattice.end),
    )


def _pretty(expr):
    return " ".join(sp.sstr(expr).split())


def _describe(loss):
    alignment = loss.recurrence.alignment
    lines = [
        loss.doc.strip() or f"The {loss.name} loss.",
        "",
        "Each sequence's loss is minus the log of the sum over its paths, one state a frame, of the",
        "product of the states' probabilities; the spec's step (alpha, log space) is",
        "",
        f"    alpha_t(s) = {_pretty(loss.recurrence.step)}",
        "",
        "with previous_k the value at frame t - 1 of the state k before s, label_k its class and",
        "emission the log-probability of s's class at frame t. The gradient runs the backward step",
        "the generator derived (beta, the moves transposed) and is minus each state's posterior.",
        "",
        "Args:",
        *[f"    {line}" for line in describe.argument_docs(loss)],
        "",
        f"A label outside the classes of ``{alignment.emissions}``, or a length out of range given as an array,",
        "makes that sequence's loss NaN (as a list or tuple, it raises).",
        "",
        "Returns:",
        "    array: The computed loss.",
    ]
    return "\n".join(lines)
