"""The vocabulary's recurrence: a loss that sums over every alignment of a label sequence to frames (CTC's).

A spec declares an :class:`Alignment`: per sequence, a ``(frames, classes)``
array of log-probabilities (``emissions``), its labels, and the lengths of
both. The alignment's states are the labels in order, with ``separator`` (a
class, CTC's blank) before, between and after them when given. A path takes
one state a frame, and the spec writes, in log space, how a state's value at
frame t follows from the values at t - 1 (the forward, alpha, recursion)::

    step = paths.emission + logaddexp(paths.previous(0), paths.previous(1))

``paths.previous(k)`` is the value at t - 1 of the state ``k`` before this one
(k = 0: the same state), ``paths.label(k)`` that state's class and
``paths.emission`` this state's log-probability at frame t. Each term of the
``logaddexp`` reads one ``previous(k)``, plus a weight of the labels and
parameters, or is a ``Piecewise((previous(k) [+ weight], condition), (-oo,
True))`` that takes the move only where ``condition`` holds.

``paths.recurrence(step, start=[0, 1], end=[-1, -2])`` is the construct: paths
begin at the ``start`` states at the first frame and end at the ``end`` states
(counted from the sequence's last state) at its last frame. The loss of a
sequence is minus the log of the sum over its paths. The generator checks that
the step is a sum over moves in the log semiring and derives the backward
(beta) recursion, the same moves transposed, and the gradient from both.
"""

from __future__ import annotations

import sympy as sp

from .vocabulary import Flag, Input, Param, SpecError, check_name

__all__ = ["Alignment"]

# The state k before the current one may be read for k up to this: a lattice whose moves span more
# states than this is no left-to-right alignment the generator was built for.
MAX_SHIFT = 8


class LatticeSymbol(sp.Symbol):
    """A symbol of the step: ``role`` (previous, label or emission) of the state ``shift`` before this one."""

    def __new__(cls, role, shift):
        name = "emission" if role == "emission" else f"{role}_{shift}" if shift >= 0 else f"{role}_after_{-shift}"
        obj = sp.Symbol.__xnew__(cls, name, real=True)
        obj.role, obj.shift = role, shift
        return obj

    def _hashable_content(self):
        return super()._hashable_content() + (self.role, self.shift)


class Recurrence:
    """What :meth:`Alignment.recurrence` makes: the alignment, its step, start and end states, options."""

    def __init__(self, alignment, step, start, end, zero_infinity, mean_per_label):
        self.alignment = alignment
        self.step = _expression(step, "step")
        self.start = _states(start, "start", lambda s: s >= 0, "counted from the first state: 0, 1, ...")
        self.end = _states(end, "end", lambda s: s < 0, "counted from the last state: -1, -2, ...")
        if zero_infinity is not None and not isinstance(zero_infinity, Flag):
            raise SpecError(f"zero_infinity= must be a Flag (the argument that zeroes infinite losses), "
                            f"got {zero_infinity!r}")
        if not isinstance(mean_per_label, bool):
            raise SpecError(f"mean_per_label= must be True or False, got {mean_per_label!r}")
        self.zero_infinity = zero_infinity
        self.mean_per_label = mean_per_label


class Alignment:
    """The arrays of an alignment loss and the symbols its step is written in (see the module's doc).

    ``emissions``: the name of the float ``(frames, sequences, classes)`` array
    of log-probabilities (``(frames, classes)`` for one sequence);
    ``labels``: of the integer labels, ``(sequences, labels)`` padded or all
    sequences' labels one after another; ``input_lengths`` and
    ``target_lengths``: of each sequence's number of frames and of labels.
    ``separator``: an integer :class:`Param`, the class between labels (CTC's
    blank), or None for states that are the labels alone.
    """

    def __init__(self, emissions, labels, input_lengths, target_lengths, *, separator=None, docs=None):
        names = [check_name(n, "Alignment array") for n in (emissions, labels, input_lengths, target_lengths)]
        if len(set(names)) < len(names):
            raise SpecError(f"the Alignment's arrays need four different names, got {names}")
        if separator is not None and not (isinstance(separator, Param) and separator.integer
                                           and separator.default is not None):
            raise SpecError(f"separator= must be an integer Param (the class between labels), got {separator!r}")
        docs = dict(docs or {})
        unknown = set(docs) - set(names)
        if unknown:
            raise SpecError(f"docs= names arrays the Alignment does not have: {sorted(unknown)}")
        self.emissions, self.labels, self.input_lengths, self.target_lengths = names
        self.separator = separator
        self.inputs = [Input(emissions, domain="log_probabilities", doc=docs.get(emissions, ""))]
        self.inputs += [IntegerArray(name, doc=docs.get(name, "")) for name in names[1:]]
        self.emission = LatticeSymbol("emission", 0)

    def previous(self, k):
        """The value at the frame before of the state ``k`` before this one."""
        return LatticeSymbol("previous", _shift(k))

    def label(self, k):
        """The class of the state ``k`` before this one (a label, or the separator)."""
        return LatticeSymbol("label", _shift(k))

    def recurrence(self, step, *, start, end, zero_infinity=None, mean_per_label=False):
        """The construct: ``step`` from ``start`` to ``end``. ``zero_infinity``: a Flag that zeroes infinite
        losses and their gradients (torch's); ``mean_per_label``: reduction 'mean' divides each sequence's
        loss by its number of labels (at least 1) before the mean over sequences (torch's CTC)."""
        return Recurrence(self, step, start, end, zero_infinity, mean_per_label)


class IntegerArray(Input):
    """An integer array argument of an alignment (labels, lengths): read, never differentiated."""

    def __new__(cls, name, *, doc=""):
        return super().__new__(cls, name, differentiable=False, doc=doc)


def _shift(k):
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_SHIFT:
        raise SpecError(f"a state is read at most {MAX_SHIFT} before this one: k must be an int in "
                        f"[0, {MAX_SHIFT}], got {k!r}")
    return int.__int__(k)


def _expression(value, what):
    if isinstance(value, str):
        raise SpecError(f"the {what} must be a SymPy expression, not a string")
    try:
        value = sp.sympify(value, strict=True)
    except (sp.SympifyError, TypeError) as err:
        raise SpecError(f"the {what} is not a SymPy expression: {err}") from None
    return value


def _states(values, what, allowed, counted):
    if not isinstance(values, (list, tuple)) or not values:
        raise SpecError(f"{what}= must be a non-empty list of states, got {values!r}")
    states = []
    for s in values:
        if isinstance(s, bool) or not isinstance(s, int) or not allowed(s) or abs(s) > MAX_SHIFT + 1:
            raise SpecError(f"{what}= states are ints {counted} (at most {MAX_SHIFT + 1} of them), got {s!r}")
        states.append(int.__int__(s))
    if len(set(states)) < len(states):
        raise SpecError(f"{what}= lists a state twice: {values!r}")
    return tuple(states)
