"""Plots for the catalogue: a loss and its gradient along one input.

The curves come from the generated MLX function and its gradient (``mx.grad``
of the ``sum`` reduction), so a plot shows what users import, on inputs chosen
from the spec alone:

* **elementwise** losses vary their first differentiable input ``x``. Another
  input ``y`` that the loss sees only through ``x - y`` is held at 0, so the
  axis is the residual ``x - y``; any other input is held at 1 (a target
  label, a variance...).
* **row-wise** losses take rows of a few elements with fixed values and vary
  the first element of the first differentiable input (a logit); class
  targets point at that element. The rows are signed values, the varied
  element in [-4, 4]; or probabilities, the varied element in (0, 1), for a
  loss that is nowhere finite or has a pole on signed rows (logs of its
  inputs, ratios of row sums); or, for inputs declared
  ``domain="log_probabilities"``, log-probability rows: the varied element is
  log q[0] in (-8, 0) and the rest of the row is rescaled to sum to 1 - q[0],
  so a divergence stays within its bounds (the gradient is then the slope
  along those rows).

Parameters and flags keep their defaults. A signed axis spans [-4, 4], or
twice the largest parameter that places a kink (a selection or an extremum
against it: a wing loss's w = 10 shows its linear branch), narrowed to where
the loss is finite (such as (0, 4] under a logarithm). An elementwise input
of log probabilities spans (-8, 0), the others of that domain held at log 1/2.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import sympy as sp

from .. import describe
from ..spec.terms import expand_terms
from ..spec.vocabulary import ClassTarget, Input, Select

# An even number of points: no sample falls on 0 or on a one-decimal value, so
# none sits exactly on a kink (a residual of 0, a tie with a fixed row value).
GRID = np.linspace(-4.0, 4.0, 400)
PROBABILITY_GRID = np.linspace(0.0, 1.0, 402)[1:-1]  # (0, 1), for an element of a probability row
LOG_PROBABILITY_GRID = np.linspace(-8.0, 0.0, 402)[1:-1]  # (-8, 0): log q from 3e-4 to 1
ROW_LENGTH = 5  # elements per row in row-wise examples


@dataclass
class Curve:
    """Sampled loss and gradient, and the words to put on the axes."""

    x: np.ndarray
    loss: np.ndarray
    gradient: np.ndarray
    x_label: str  # what varies along the horizontal axis
    wrt: str  # the input the gradient is taken with respect to
    held: list  # "name = value" for everything held fixed


def _default_formula(loss):
    """The formula with flags at their defaults and terms expanded."""
    defaults = {f.name: f.default for f in loss.flags}
    formula = expand_terms(loss.formula)
    return formula.replace(
        lambda e: isinstance(e, Select), lambda e: e.args[1] if defaults[e.args[0].name] else e.args[2]
    )


def _is_residual(formula, x, y):
    """Whether the loss depends on ``x`` and ``y`` only through ``x - y``."""
    r = sp.Symbol("_residual", real=True)
    return y not in formula.xreplace({x: r + y}).free_symbols


def _required(loss):
    """The array inputs a call must pass (optional ones, default None, are left out)."""
    needed = {name for name, default in describe.signature(loss) if default is None}
    return [i for i in loss.inputs if i.name in needed]


def _signed_grid(loss):
    """GRID, or twice as wide as the largest parameter that places a kink (compared against, or
    inside a maximum or minimum), so that every branch shows."""
    formula = _default_formula(loss)
    placing = set()
    for node in sp.preorder_traversal(formula):
        if isinstance(node, sp.Piecewise):
            placing |= set().union(*(c.free_symbols for _, c in node.args))
        elif isinstance(node, (sp.Max, sp.Min)):
            placing |= node.free_symbols
    scales = [abs(p.default) for p in loss.numeric_params if p in placing and p.default is not None]
    span = max([GRID[-1]] + [2.0 * s for s in scales])
    return GRID * (span / GRID[-1])


def _log_probabilities(item):
    return getattr(item, "domain", "real") == "log_probabilities"


def _varied_input(loss):
    element = [i for i in _required(loss) if isinstance(i, Input) and not i.per_row]
    return next((i for i in element if i.differentiable), element[0]), element


def _parameter_notes(loss):
    return [f"{p.name} = {p.default}" for p in loss.params]


def _longest_finite_run(values):
    """(first, last) indices of the longest run of finite values, or None."""
    best, start = None, None
    for i, finite in enumerate(np.append(np.isfinite(values), False)):
        if finite and start is None:
            start = i
        elif not finite and start is not None:
            if best is None or i - start > best[1] - best[0] + 1:
                best = (start, i - 1)
            start = None
    return best


def _sample(evaluate, grid=GRID):
    """(x, loss, gradient) on ``grid``, or on the widest stretch of it where the loss is finite.

    ``evaluate(x)`` returns the loss and gradient at the points ``x``; None when
    the loss is finite at fewer than two of them.
    """
    loss, gradient = evaluate(grid)
    if np.isfinite(loss).all():
        return grid, loss, gradient
    run = _longest_finite_run(loss)
    if run is None or run[0] == run[1]:
        return None
    x = np.linspace(grid[run[0]], grid[run[1]], len(grid))
    return (x, *evaluate(x))


def elementwise_curve(loss, function):
    """Loss and gradient of an elementwise loss along its first input."""
    import mlx.core as mx

    x, element = _varied_input(loss)
    formula = _default_formula(loss)
    fixed, partners = {}, []
    for other in element:
        if other is x:
            continue
        if _log_probabilities(other):
            fixed[other.name] = float(np.log(0.5))
        elif _is_residual(formula, x, other):
            fixed[other.name] = 0.0
            partners.append(other.name)
        else:
            fixed[other.name] = 1.0
    # With one residual partner the axis is the residual; with several, x itself.
    residual = partners[0] if len(partners) == 1 else None
    x_label = f"{x.name} - {residual}" if residual else x.name
    held = [f"{name} = {value:g}" for name, value in fixed.items() if name != residual]

    def evaluate(points):
        points = mx.array(points, dtype=mx.float32)
        constants = {name: mx.full(points.shape, value) for name, value in fixed.items()}
        losses = function(**{x.name: points}, **constants, reduction="none")
        gradient = mx.grad(lambda v: function(**{x.name: v}, **constants, reduction="sum"))(points)
        return np.array(losses), np.array(gradient)

    grid = LOG_PROBABILITY_GRID if _log_probabilities(x) else _signed_grid(loss)
    sampled = _sample(evaluate, grid)
    if sampled is None:
        raise ValueError(f"{loss.name}: the loss is not finite on [{grid[0]:g}, {grid[-1]:g}] "
                         f"with {', '.join(held) or 'defaults'}")
    return Curve(*sampled, x_label, x.name, held + _parameter_notes(loss))


def fixed_row(seed, style):
    """A reproducible example row: signed values (one decimal), probabilities (summing to 1) or their logs."""
    values = np.random.default_rng(seed).normal(size=ROW_LENGTH)
    if style in ("probabilities", "log_probabilities"):
        values = np.exp(values) / np.exp(values).sum()
        values = np.round(values, 2)
        return (np.log(values / values.sum()) if style == "log_probabilities" else values).astype(np.float32)
    return np.round(values, 1).astype(np.float32)


def _listed(values):
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _row_curve(loss, function, x, element, style):
    """The row-wise curve on example rows of one style, or None where the loss is nowhere finite."""
    import mlx.core as mx

    def row_style(item):
        return style if style != "log_probabilities" or _log_probabilities(item) else "signed"

    rows = {item.name: fixed_row(seed, row_style(item)) for seed, item in enumerate(element)}
    held = [f"{x.name}[1:] = {_listed(rows[x.name][1:])}" + (", rescaled to sum to 1 - q[0]" if style == "log_probabilities" else "")]
    held += [f"{name} = {_listed(row)}" for name, row in rows.items() if name != x.name]
    extra = {}
    for item in _required(loss):
        if isinstance(item, ClassTarget):
            extra[item.name] = lambda n: mx.zeros((n,), dtype=mx.int32)
            held.append(f"{item.name} = class 0")
        elif item.per_row:
            extra[item.name] = lambda n: mx.ones((n,))
            held.append(f"{item.name} = 1")

    def along(first):
        """The varied row for each value of its first element (a column)."""
        rest = mx.array(np.tile(rows[x.name][1:], (first.shape[0], 1)))
        if style == "log_probabilities":  # the rest rescaled: the row's probabilities sum to 1
            rest = rest + mx.log1p(-mx.exp(first)) - mx.logsumexp(rest, axis=-1, keepdims=True)
        return mx.concatenate([first, rest], axis=-1)

    def evaluate(points):
        others = {name: mx.array(np.tile(row, (len(points), 1))) for name, row in rows.items() if name != x.name}
        others.update({name: make(len(points)) for name, make in extra.items()})
        first = mx.array(points, dtype=mx.float32)[:, None]
        losses = function(**{x.name: along(first)}, **others, axis=-1, reduction="none")
        gradient = mx.grad(lambda v: function(**{x.name: along(v)}, **others, axis=-1, reduction="sum"))(first)
        return np.array(losses), np.array(gradient[:, 0])

    grid = {"probabilities": PROBABILITY_GRID, "log_probabilities": LOG_PROBABILITY_GRID}.get(style, _signed_grid(loss))
    sampled = _sample(evaluate, grid)
    return None if sampled is None else Curve(*sampled, f"{x.name}[0]", f"{x.name}[0]", held + _parameter_notes(loss))


def rowwise_curve(loss, function):
    """Loss and gradient of a row-wise loss along the first element of its first input.

    Signed rows, unless the loss is nowhere finite on them or is over a
    thousand times steeper there than on probability rows: a pole, as where a
    ratio of row sums that expects probabilities (Dice) divides by zero.
    """
    x, element = _varied_input(loss)
    if _log_probabilities(x):
        curve = _row_curve(loss, function, x, element, "log_probabilities")
        if curve is None:
            raise ValueError(f"{loss.name}: the loss is not finite on log-probability rows")
        return curve
    signed, probabilities = (_row_curve(loss, function, x, element, s) for s in ("signed", "probabilities"))
    if signed is None and probabilities is None:
        raise ValueError(f"{loss.name}: the loss is not finite on signed rows nor on probability rows")
    if probabilities is None:
        return signed
    steepest = lambda c: np.abs(c.gradient[np.isfinite(c.gradient)]).max(initial=0.0)
    if signed is None or steepest(signed) > 1000 * steepest(probabilities):
        return probabilities
    return signed


def recurrence_curve(loss, function):
    """Loss and gradient of an alignment loss (CTC's) of one sequence of labels [1, 2] over 4 frames of 3
    classes, against the logit z of class 1 at every frame (the others' 0), through ``log_softmax``."""
    import mlx.core as mx

    frames, labels = 4, [1, 2]
    names = [i.name for i in loss.inputs]

    def total(z):  # every point is one sequence of the batch
        count = z.shape[0]
        logits = mx.broadcast_to(mx.stack([mx.zeros_like(z), z, mx.zeros_like(z)], axis=-1), (frames, count, 3))
        log_probs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        return function(log_probs, mx.array([labels] * count), [frames] * count, [len(labels)] * count,
                        reduction="none")

    def evaluate(points):
        z = mx.array(points, dtype=mx.float32)
        return np.array(total(z)), np.array(mx.grad(lambda v: total(v).sum())(z))

    sampled = _sample(evaluate, GRID)
    held = [f"{names[1]} = {labels}", f"{frames} frames of 3 classes, the other logits 0"]
    return Curve(*sampled, "z", "z (the logit of class 1 at every frame)", held + _parameter_notes(loss))


def curve(loss, function):
    """The :class:`Curve` of ``loss`` as the generated ``function`` computes it."""
    if loss.kind == "recurrence":
        return recurrence_curve(loss, function)
    return elementwise_curve(loss, function) if loss.kind == "elementwise" else rowwise_curve(loss, function)


def figure_png(name, curve):
    """The PNG bytes of a two-panel figure: the loss above, its gradient below."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    figure = Figure(figsize=(5.5, 4.2), dpi=100)
    # Fixed margins: a layout engine would take three times as long as the drawing.
    figure.subplots_adjust(left=0.16, right=0.97, top=0.93, bottom=0.11, hspace=0.08)
    top, bottom = figure.subplots(2, 1, sharex=True)
    top.plot(curve.x, curve.loss, color="tab:blue")
    top.set_ylabel("loss")
    top.set_title(name)
    bottom.plot(curve.x, curve.gradient, color="tab:orange")
    bottom.set_ylabel(f"d loss / d {curve.wrt}")
    bottom.set_xlabel(curve.x_label)
    for axes in (top, bottom):
        axes.grid(True, alpha=0.3)
        axes.axhline(0.0, color="black", linewidth=0.5)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
