"""The kernels of a recurrence loss (CTC's): every frame of the forward or the backward recursion in one launch.

MLX runs a recurrence as a Python loop of whole-batch operations, one launch
each a frame; these kernels run all the frames of a sequence in one
threadgroup, its threads striding over the states, a barrier between frames
(a frame reads the values the threadgroup wrote for the frame before or after,
in the output). The step is printed from the same moves the MLX backend
prints (``generator.lattice``); the emissions are gathered, and the
posteriors summed into the classes, by MLX operations around them.
"""

from __future__ import annotations

import hashlib

import sympy as sp

from ...lattice import local_name
from ...spec.recurrence import LatticeSymbol
from ...spec.vocabulary import Param
from ..source import docstring, environment, header
from .kernels import BACKENDS, headers
from .printer import CPrinter, c_name

INPUTS = [("emissions", "emissions"), ("states", "states"), ("input_lengths", "input_lengths"),
          ("state_counts", "state_counts"), ("params", "params"), ("meta", "meta")]


def _name(symbol, values):
    return local_name(symbol, values, "label_0")  # this state's class, read into a local


def _step(moves, values, read, params, dialect):
    """The lines reading what a step needs at state ``s`` and the expression of its log-semiring sum."""
    names = {p: c_name(p.name) for p in params}
    labels = sorted({x for m in moves for x in m.condition.free_symbols | m.weight.free_symbols
                     if isinstance(x, LatticeSymbol)} | {LatticeSymbol("label", 0)}, key=lambda x: x.shift)
    lines = []
    for move in moves:
        name = _name(LatticeSymbol("previous", move.shift), values)
        lines.append(f"const float {name} = {read(move.shift)};" if move.shift == 0
                     else f"const float {name} = {_inside(move.shift)} ? {read(move.shift)} : -losscc_inf();")
    for label in labels:
        names[label] = _name(label, values)
        lines.append(f"const int {names[label]} = states[row + s];" if label.shift == 0 else
                     f"const int {names[label]} = {_inside(label.shift)} ? states[row + {_at(label.shift)}] : -1;")
    printer = CPrinter(dialect, names)
    terms = []
    for move in moves:
        term = _name(LatticeSymbol("previous", move.shift), values)
        if move.weight != 0:
            term = f"({term} + {printer.doprint(move.weight)})"
        if move.condition != sp.true:
            term = f"({printer.doprint(move.condition)} ? {term} : -losscc_inf())"
        terms.append(term)
    total = terms[0]
    for term in terms[1:]:
        total = f"losscc_log_add({total}, {term})"
    return lines, total


def _at(shift):
    """The state ``shift`` before ``s`` (after, where negative)."""
    return "s" if shift == 0 else f"s - {shift}u" if shift > 0 else f"s + {-shift}u"


def _inside(shift):
    """Whether the state ``shift`` before ``s`` (after, where negative) is one of the sequence's row."""
    if shift == 0:
        return "true"
    return f"(s >= {shift}u)" if shift > 0 else f"(s + {-shift}u < width)"


def _sources(loss, lattice, direction):
    env = environment()
    params = [p for p in loss.params if isinstance(p, Param)]
    sources = {}
    for backend, dialect in BACKENDS.items():
        if direction == "forward":
            read = lambda k: f"alphas[before + {_at(k)}]"
            lines, total = _step(lattice.forward, "previous", read, params, dialect)
        else:
            read = lambda k: f"(betas[after + {_at(k)}] + emissions[after + {_at(k)}])"
            lines, total = _step(lattice.backward, "reached", read, params, dialect)
        sources[backend] = env.get_template("gpu/lattice.j2").render(
            dialect=f"gpu/{backend}/dialect.j2", title=f"{loss.name} {direction} ({loss.source})",
            direction=direction, params=[c_name(p.name) for p in params], lines=lines, total=total,
            start=" || ".join(f"s == {s}u" for s in lattice.start),
            end=" || ".join(f"static_cast<int>(s) == state_count - {-e}" for e in lattice.end),
        )
    return sources


def render(env, loss, lattice):
    """The source of the package's ``kernels/<loss>.py`` for a recurrence loss: its forward and backward kernel."""
    kernels = {}
    header_text = headers()
    for direction, output in (("forward", "alphas"), ("backward", "betas")):
        sources = _sources(loss, lattice, direction)
        digest = hashlib.sha256("\0".join(header_text[b] + sources[b] for b in BACKENDS).encode()).hexdigest()[:12]
        kernels[direction] = {"name": f"losscc_{loss.name}_{direction}_{digest}", "inputs": INPUTS,
                              "outputs": [(output, "values")], "sources": sources}
    text = "\n".join([
        f"{loss.name}: Metal and CUDA kernels, generated from {loss.source}.",
        "",
        "The forward (alpha) and the backward (beta) recursion of every sequence, each in one launch: a",
        "threadgroup a sequence, its threads over the states, frame by frame (see _lattice.py).",
    ])
    return env.get_template("gpu/lattice_kernels.py.j2").render(
        header=header(loss.source), docstring=docstring(text), forward=kernels["forward"],
        backward=kernels["backward"])
