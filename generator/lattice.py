"""Derivation for recurrence losses (``Alignment.recurrence``): the step's moves, and the backward from them.

The spec's step is ``alpha_t(s) = emission_t(s) + logaddexp over moves m of
[condition_m(s)] (alpha_{t-1}(s - k_m) + weight_m(s))``: a sum over paths in
the log semiring. Its derivative is the same sum run backwards: the value of
the paths from state s at frame t to an end,

    beta_t(s) = logaddexp over moves m of [condition_m(s + k_m)]
                (beta_{t+1}(s + k_m) + emission_{t+1}(s + k_m) + weight_m(s + k_m)),

each move transposed (its condition and weight read at the state it leads
to), and the gradient of minus the log total in an emission is minus the
posterior of its state, ``exp(alpha_t(s) + beta_t(s) - log total)``. This
module finds the moves in the step (or says why the step is no such sum) and
transposes them; the MLX backend prints both steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .spec import functions as fn
from .spec.recurrence import LatticeSymbol
from .spec.vocabulary import Flag, Param, SpecError


@dataclass(frozen=True)
class Move:
    """From the state ``shift`` before (after, when negative), where ``condition`` holds, adding ``weight``."""

    shift: int
    condition: sp.Basic
    weight: sp.Expr


@dataclass(frozen=True)
class Lattice:
    """A recurrence loss derived: the step's moves, forward and transposed, and its start and end states."""

    forward: tuple
    backward: tuple
    start: tuple
    end: tuple

    def symbols(self, direction):
        """The label symbols the moves of ``direction`` ('forward' or 'backward') read, in order of shift."""
        moves = getattr(self, direction)
        found = set().union(*(m.condition.free_symbols | m.weight.free_symbols for m in moves))
        return sorted((s for s in found if isinstance(s, LatticeSymbol)), key=lambda s: s.shift)


def local_name(symbol, values, this_label):
    """The name a printed step gives one of its symbols: ``values`` (a frame's values) of the state k before
    (``<values>_k``) or after (``<values>_after_k``), or the class of such a state (``label_k``,
    ``label_after_k``; this state's: ``this_label``)."""
    if symbol.role == "label":
        return this_label if symbol.shift == 0 else symbol.name
    if symbol.shift == 0:
        return values
    return f"{values}_{symbol.shift}" if symbol.shift > 0 else f"{values}_after_{-symbol.shift}"


def derive_lattice(loss):
    """The :class:`Lattice` of a recurrence loss; a step that is no sum over moves raises a SpecError."""
    recurrence = loss.recurrence
    step = recurrence.step
    allowed = {p for p in loss.params if isinstance(p, Param)}
    stray = {s for s in step.free_symbols if not isinstance(s, LatticeSymbol) and s not in allowed}
    if stray:
        raise SpecError(f"the step reads {sorted(map(str, stray))}: it may read the alignment's previous(k), "
                        "label(k) and emission, and the loss's numeric parameters")
    if any(isinstance(s, Flag) for s in step.free_symbols):
        raise SpecError("the step may not read a flag")
    emission = recurrence.alignment.emission
    rest = sp.expand(step - emission, deep=False)
    if emission in rest.free_symbols or emission not in step.free_symbols:
        raise SpecError("the step must be emission + logaddexp(...) of the moves: the emission added once")
    moves = tuple(_move(term) for term in _terms(rest))
    shifts = [m.shift for m in moves]
    if len(set(shifts)) < len(shifts):
        raise SpecError(f"the step reads one previous state in two terms (shifts {shifts}): join them")
    return Lattice(moves, tuple(_transposed(m) for m in moves), recurrence.start, recurrence.end)


def _terms(expr):
    """The terms of a (nested) logaddexp."""
    if isinstance(expr, fn.logaddexp):
        return [t for arg in expr.args for t in _terms(arg)]
    return [expr]


def _move(term):
    """One term of the step's logaddexp as a Move: previous(k) + weight, or that under a condition."""
    condition = sp.true
    if isinstance(term, sp.Piecewise):
        pieces = term.args
        if len(pieces) != 2 or pieces[1].cond != sp.true or pieces[1].expr != -sp.oo:
            raise SpecError(f"a conditional move is Piecewise((previous(k) + weight, condition), (-oo, True)), "
                            f"got {term}")
        term, condition = pieces[0].expr, pieces[0].cond
        if _reads(condition, ("previous", "emission")):
            raise SpecError(f"a move's condition reads labels and parameters alone, got {condition}")
    previous = [s for s in term.free_symbols if isinstance(s, LatticeSymbol) and s.role == "previous"]
    if len(previous) != 1:
        raise SpecError(f"each term of the step's logaddexp reads one previous(k), got {term}")
    weight = sp.expand(term - previous[0], deep=False)
    if _reads(weight, ("previous", "emission")):
        raise SpecError(f"a move is previous(k) plus a weight of the labels and parameters, got {term}")
    return Move(previous[0].shift, condition, weight)


def _reads(expr, roles):
    return any(isinstance(s, LatticeSymbol) and s.role in roles for s in expr.free_symbols)


def _transposed(move):
    """The move run backwards: from the state ``shift`` after, its condition and weight read at that state."""
    labels = {s: LatticeSymbol("label", s.shift - move.shift)
              for s in (move.condition.free_symbols | move.weight.free_symbols)
              if isinstance(s, LatticeSymbol) and s.role == "label"}
    return Move(-move.shift, move.condition.xreplace(labels), move.weight.xreplace(labels))
