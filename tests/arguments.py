"""Arguments for any loss in specs/, built from its declarations, and truths to check against.

The robustness tests (half precision, extreme values, properties, bad inputs)
run over every spec: a new spec is covered without editing them. A loss whose
math needs its inputs in a domain (probabilities, positive variances) gets
one entry in DOMAINS; everything else is read from the declarations.

Truths: ``truth64`` is the float64 numpy interpretation of the formula
(tests/oracle.py); ``truth_mp`` interprets it in 30-digit mpmath, where
``exp(1e4)`` or ``(1e30)**2`` do not overflow, so it tells where the math
itself is finite. Infinite inputs are given to it as +-1e300: beyond every
float32, and the limit the float code must agree with.
"""

from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import mlx.core as mx
import mlx.nn.losses as mlx_losses
import mpmath
import numpy as np

import generated
from generator.spec import ClassTarget, ClassWeights, Input
from generator.spec.load import load_specs
from tests import oracle

ROOT = Path(__file__).resolve().parent.parent
# The losses of elements and rows, which the suite's shared makers of arguments know; a recurrence loss
# (ctc_loss: frames, labels and lengths) has its own tests (tests/test_ctc_loss.py).
LOSSES = {loss.name: loss for loss in load_specs(ROOT / "specs") if loss.kind != "recurrence"}
MLX_LOSSES = sorted(name for name in LOSSES if hasattr(mlx_losses, name))
HALF = (mx.float16, mx.bfloat16)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def element_inputs(loss):
    return [i for i in float_inputs(loss) if not i.per_row]


def float_inputs(loss):
    """The float array inputs, but per-class weights (a vector along the class axis)."""
    return [i for i in loss.inputs if isinstance(i, Input) and not isinstance(i, ClassWeights)]


# ------------------------------------------------------------ value domains

@dataclass(frozen=True)
class Domain:
    """Where a loss's inputs make sense, for the losses where that is not all reals.

    ``into(call)`` maps the call's values, drawn anywhere in the reals, into
    the domain (in place); ``valid(call)`` gives, per input, which elements
    are in it (the others have no meaningful loss: tests ask nothing of
    them); ``log_probabilities`` names the inputs that are log-probabilities
    (where -inf means a probability of 0).
    """

    into: object = None
    valid: object = None
    log_probabilities: tuple = ()


def _sigmoid(x, low=0.0, high=1.0):
    return low + (high - low) / (1.0 + np.exp(-x))


def _bce_into(call):
    if not call.flags["with_logits"]:
        call.arrays["inputs"] = _sigmoid(call.arrays["inputs"], 0.02, 0.98)
    call.arrays["targets"] = _sigmoid(call.arrays["targets"])


def _bce_valid(call):
    unit = lambda a: (a >= 0) & (a <= 1)
    inputs = call.arrays["inputs"]
    return {"inputs": np.isfinite(inputs) if call.flags["with_logits"] else unit(inputs),
            "targets": unit(call.arrays["targets"])}


def _gaussian_into(call):
    call.arrays["vars"] = 0.1 + np.abs(call.arrays["vars"])


def _log_probabilities(*names):
    return lambda call: {n: call.arrays[n] <= 0 for n in names}


def _log_softmax_rows(*names):
    """Each row of these inputs (along the loss axis) into log-probabilities."""
    def into(call):
        for name in names:
            z = call.arrays[name]
            if z.size and z.ndim:
                z = z - z.max(axis=call.axis, keepdims=True)
                call.arrays[name] = z - np.log(np.exp(z).sum(axis=call.axis, keepdims=True))
    return into


def _unit_interval(*names):
    """These inputs into [0, 1] (probabilities, masks)."""
    def into(call):
        for name in names:
            call.arrays[name] = _sigmoid(call.arrays[name])
    return into


def _valid_unit_interval(*names):
    return lambda call: {n: (call.arrays[n] >= 0) & (call.arrays[n] <= 1) for n in names}


def _poisson_into(call):
    if not call.flags["log_input"]:
        call.arrays["inputs"] = np.abs(call.arrays["inputs"])
    call.arrays["targets"] = np.round(3 * np.abs(call.arrays["targets"]))  # counts


def _poisson_valid(call):
    valid = {"targets": call.arrays["targets"] >= 0}
    if not call.flags["log_input"]:
        valid["inputs"] = call.arrays["inputs"] >= 0
    return valid


def _kl_div_into(call):
    _log_softmax_rows("inputs")(call)
    if call.flags["log_target"]:
        _log_softmax_rows("targets")(call)
    else:
        call.arrays["targets"] = _sigmoid(call.arrays["targets"])


def _kl_div_valid(call):
    valid = {"inputs": call.arrays["inputs"] <= 0}
    targets = call.arrays["targets"]
    valid["targets"] = targets <= 0 if call.flags["log_target"] else (targets >= 0) & (targets <= 1)
    return valid


def _generalized_kl_into(call):
    _log_softmax_rows("log_predictions")(call)
    call.arrays["targets"] = _sigmoid(call.arrays["targets"])  # measures: non-negative, a row need not sum to 1


def _tweedie_into(call):
    call.arrays["inputs"] = 0.1 + np.abs(call.arrays["inputs"])
    call.arrays["targets"] = np.abs(call.arrays["targets"])


def _at_most_zero(*names):
    """These inputs into (-inf, 0] (a sequence's log-probability)."""
    def into(call):
        for name in names:
            call.arrays[name] = -np.abs(call.arrays[name])
    return into


def _positive_means(call):
    return {"inputs": call.arrays["inputs"] > 0, "targets": call.arrays["targets"] >= 0}


DOMAINS = {
    "binary_cross_entropy": Domain(_bce_into, _bce_valid),
    "poisson_nll_loss": Domain(_poisson_into, _poisson_valid),
    "kl_div": Domain(_kl_div_into, _kl_div_valid, log_probabilities=("inputs",)),
    "tweedie_deviance": Domain(_tweedie_into, _positive_means),
    "binary_dice_loss": Domain(_unit_interval("inputs", "targets"), _valid_unit_interval("inputs", "targets")),
    "tversky_loss": Domain(_unit_interval("inputs", "targets"), _valid_unit_interval("inputs", "targets")),
    "sigmoid_focal_loss": Domain(_unit_interval("targets"), _valid_unit_interval("targets")),
    "jensen_shannon_divergence": Domain(_log_softmax_rows("inputs", "targets"), _log_probabilities("inputs", "targets"),
                                        log_probabilities=("inputs", "targets")),
    "gaussian_nll_loss": Domain(_gaussian_into),
    "kl_div_loss": Domain(_log_softmax_rows("inputs", "targets"), _log_probabilities("inputs", "targets"),
                          log_probabilities=("inputs", "targets")),
    "generalized_kl_divergence": Domain(_generalized_kl_into, lambda call: {"targets": call.arrays["targets"] >= 0},
                                        log_probabilities=("log_predictions",)),
    "nll_loss": Domain(_log_softmax_rows("inputs"), log_probabilities=("inputs",)),
    "cross_entropy": Domain(log_probabilities=("logits",)),  # -inf logits mask classes out
    # the log odds of a probability: log(p) - log(1 - p), of log-probabilities
    "orpo_loss": Domain(_at_most_zero("chosen_logps", "rejected_logps"),
                        _log_probabilities("chosen_logps", "rejected_logps")),
}


def into_domain(call):
    """The call with its values mapped into the loss's domain."""
    into = DOMAINS.get(call.name, Domain()).into
    if into is not None:
        call = replace(call, arrays=dict(call.arrays))
        into(call)
        call.arrays.update({k: np.asarray(v) for k, v in call.arrays.items()})
    return call


# ------------------------------------------------------------ calls

@dataclass
class Call:
    """One call of a loss: float64 (or integer) numpy arrays, parameters, flags, axis."""

    loss: object
    arrays: dict
    params: dict = field(default_factory=dict)
    flags: dict = field(default_factory=dict)
    axis: int | None = None
    weights: np.ndarray | None = None

    @property
    def name(self):
        return self.loss.name

    @property
    def differentiable(self):
        return [i.name for i in self.loss.inputs if i.differentiable and i.name in self.arrays
                and np.issubdtype(self.arrays[i.name].dtype, np.floating)]

    def with_arrays(self, **arrays):
        return replace(self, arrays={**self.arrays, **arrays})

    def mx_arrays(self, dtype=mx.float32):
        """The arrays as MLX arrays: floats in ``dtype``, class indices as int32."""
        out = {}
        for name, value in self.arrays.items():
            if np.issubdtype(value.dtype, np.integer):
                out[name] = mx.array(value.astype(np.int32))
            else:
                out[name] = mx.array(value.astype(np.float32)).astype(dtype)
        return out

    def kwargs(self, dtype=mx.float32):
        extra = dict(self.params) | dict(self.flags)
        if self.axis is not None:
            extra["axis"] = self.axis
        if self.weights is not None:
            extra[self.loss.weights.name] = mx.array(self.weights.astype(np.float32)).astype(dtype)
        return extra

    def rounded(self, dtype):
        """The same call with every float array rounded to ``dtype`` (and kept in float64)."""
        def round_(a):
            if a is None or np.issubdtype(a.dtype, np.integer):
                return a
            return np.asarray(mx.array(a.astype(np.float32)).astype(dtype).astype(mx.float32), dtype=np.float64)
        return replace(self, arrays={k: round_(v) for k, v in self.arrays.items()}, weights=round_(self.weights))

    def run(self, function, reduction="none", dtype=mx.float32, arrays=None):
        """``function`` (ours or mlx.nn.losses') on this call; ``arrays`` overrides some MLX arrays."""
        return function(**{**self.mx_arrays(dtype), **(arrays or {})}, **self.kwargs(dtype), reduction=reduction)


def ours(name):
    return getattr(generated, name)


def _beyond_mlx(name, arguments):
    """Of ``arguments`` {name: value}, those mlx.nn.losses' twin lacks and that are not at our default."""
    accepted = inspect.signature(getattr(mlx_losses, name)).parameters
    defaults = {p.name: p.default for p in LOSSES[name].params}
    return sorted(k for k, v in arguments.items() if k not in accepted and (k not in defaults or v != defaults[k]))


def has_twin(call):
    """Whether mlx.nn.losses has this loss and this call's options and arrays (ours add keyword-only ones)."""
    return call.name in MLX_LOSSES and not _beyond_mlx(call.name, {**call.params, **call.arrays})


def theirs(name):
    """mlx.nn.losses' twin, taking our arguments: the keyword-only options it lacks must be at their defaults."""
    function = getattr(mlx_losses, name)
    accepted = inspect.signature(function).parameters

    def call(*args, **kwargs):
        beyond = _beyond_mlx(name, kwargs)
        assert not beyond, f"mlx.nn.losses.{name} has no {beyond}"
        return function(*args, **{k: v for k, v in kwargs.items() if k in accepted})

    return call


def shapes_for(loss, shape, axis):
    """(element shape, row shape) for a loss called on element arrays of ``shape``."""
    if loss.kind == "elementwise":
        return shape, shape
    return shape, tuple(s for i, s in enumerate(shape) if i != axis % len(shape))


def param_values(loss):
    """Every numeric parameter at its default."""
    return {p.name: p.default for p in loss.numeric_params}


def variants(loss):
    """Every combination of flags, and of target forms for a class target with probabilities."""
    forms = ["indices"] + (["probabilities"] if any(t.probabilities for t in loss.class_targets) else [])
    for values in itertools.product((True, False), repeat=len(loss.flags)):
        for form in forms if loss.class_targets else [None]:
            yield {f.name: v for f, v in zip(loss.flags, values)}, form


def variant_id(flags, form):
    parts = [f"{k}={v}" for k, v in flags.items()] + ([form] if form else [])
    return ",".join(parts) or "default"


def make_call(loss, rng, shape=(3, 4), axis=None, flags=None, form="indices", params=None, weights=False):
    """A call of ``loss`` on fresh random values in its domain."""
    if loss.kind == "rowwise" and axis is None:
        axis = loss.axis
    element_shape, row_shape = shapes_for(loss, shape, axis)
    flags = {f.name: f.default for f in loss.flags} | (flags or {})
    arrays = {}
    for item in loss.inputs:
        if isinstance(item, ClassWeights):
            if element_shape:  # one weight per class: along the loss axis, or the last axis
                arrays[item.name] = rng.uniform(0.5, 1.5, size=element_shape[-1 if axis is None else axis])
            continue
        if isinstance(item, ClassTarget):
            classes = element_shape[axis]
            if form == "probabilities":
                z = rng.normal(size=element_shape)
                z = np.exp(z - z.max(axis=axis, keepdims=True))
                arrays[item.name] = z / z.sum(axis=axis, keepdims=True)
            else:
                arrays[item.name] = rng.integers(0, max(classes, 1), size=row_shape)  # 0 classes: index 0
        else:
            arrays[item.name] = rng.normal(size=row_shape if item.per_row else element_shape)
    call = Call(loss, arrays, param_values(loss) if params is None else params, flags, axis,
                rng.uniform(0.5, 1.5, size=row_shape) if (weights and loss.weights is not None) else None)
    return into_domain(call)


def kept_rows(call):
    """Per loss element: whether its class index is not the call's ignore_index; None when nothing is ignored."""
    for target in call.loss.class_targets:
        ignore_index = None if target.ignore_index is None else call.params.get(target.ignore_index.name)
        indices = call.arrays[target.name]
        if ignore_index is not None and np.issubdtype(indices.dtype, np.integer):
            return indices != ignore_index
    return None


def unit_scale(call):
    """Per loss element: the largest finite magnitude among the input values it reads."""
    shape, take = _units(call)
    scale = np.zeros(shape)
    for item in call.loss.inputs:
        array = call.arrays.get(item.name)
        if array is None or not np.issubdtype(array.dtype, np.floating):
            continue
        finite = np.where(np.isfinite(array), np.abs(array), 0.0)
        for index in np.ndindex(shape):
            scale[index] = max(scale[index], float(np.max(take(item, finite, index), initial=0.0)))
    return scale


def in_domain(call):
    """Per loss element (reduction 'none'): whether every input value it reads is in the loss's domain."""
    valid = DOMAINS.get(call.name, Domain()).valid
    shape, take = _units(call)
    ok = np.ones(shape, dtype=bool)
    if valid is None:
        return ok
    for name, mask in valid(call).items():
        item = next(i for i in call.loss.inputs if i.name == name)
        for index in np.ndindex(shape):
            ok[index] &= bool(np.all(take(item, mask, index)))
    return ok


# ------------------------------------------------------------ truths

def truth64(call, reduction="none"):
    """The float64 interpretation of the formula (tests/oracle.py), as an array."""
    arrays, weights = call.arrays, call.weights
    scalar = all(np.ndim(a) == 0 for a in arrays.values())
    if scalar:  # the oracle takes a 0-d array for a Python number: give it vectors of one
        arrays = {k: np.reshape(v, (1,)) for k, v in arrays.items()}
        weights = None if weights is None else np.reshape(weights, (1,))
    with np.errstate(all="ignore"):  # NaN and inf inputs, 0 ** -1: the IEEE answers are the point
        out = np.asarray(oracle.reference(call.loss, arrays, call.params, oracle.NUMPY, call.axis, reduction,
                                          weights, call.flags), dtype=np.float64)
    return out.reshape(()) if scalar and reduction == "none" else out


def finite_differences(call, name, reduction="sum", cotangent=None, step=1e-6):
    """d(sum(cotangent * loss))/d(name) by central differences of ``truth64``, and where that is unreliable.

    An element is unreliable (a kink, or a feature narrower than the step,
    such as a clamp at eps) where the one-sided differences disagree, or
    where a step 64 times smaller gives another answer: comparisons leave
    it out.
    """
    base = call.arrays[name]
    grad = np.zeros(base.shape)
    unreliable = np.zeros(base.shape, dtype=bool)

    def objective(moved):
        value = truth64(call.with_arrays(**{name: moved}), reduction)
        return float(np.sum(value * cotangent)) if cotangent is not None else float(np.sum(value))

    def at(index, offset):
        moved = base.copy()
        moved[index] += offset
        return objective(moved)

    center = objective(base)
    agree = lambda a, b: abs(a - b) <= 1e-3 * max(1.0, abs(a), abs(b))
    for index in np.ndindex(base.shape):
        h = step * max(1.0, abs(base[index]))
        up, down = at(index, h), at(index, -h)
        grad[index] = (up - down) / (2 * h)
        fine = (at(index, h / 64) - at(index, -h / 64)) / (2 * h / 64)
        unreliable[index] = not (agree((up - center) / h, (center - down) / h) and agree(grad[index], fine))
    return grad, unreliable


mpmath.mp.dps = 30
STAND_IN_FOR_INFINITY = 1e300


class Undefined(ArithmeticError):
    """The math has no value here (log of a negative number, ...)."""


def _elementwise(fn, arity=1):
    return staticmethod(np.frompyfunc(fn, arity, 1))


def _real_log(x):
    if x < 0:
        raise Undefined("log of a negative number")
    return mpmath.log(x) if x > 0 else -mpmath.inf


def _real_power(base, exponent):
    base, exponent = mpmath.mpf(base), mpmath.mpf(exponent)
    if base < 0 and exponent != int(exponent):
        raise Undefined("fractional power of a negative number")
    if base == 0 and exponent < 0:
        return mpmath.inf
    return mpmath.power(base, exponent)


def _logaddexp(a, b):
    top = max(a, b)
    return top if mpmath.isinf(top) else top + mpmath.log(mpmath.exp(a - top) + mpmath.exp(b - top))


class _MPMath:
    """The oracle's array module over numpy object arrays of 30-digit mpmath numbers."""

    where = staticmethod(np.where)
    broadcast_to = staticmethod(np.broadcast_to)
    abs = _elementwise(mpmath.fabs)
    sign = _elementwise(mpmath.sign)
    exp = _elementwise(mpmath.exp)
    log = _elementwise(_real_log)
    tanh = _elementwise(mpmath.tanh)
    cosh = _elementwise(mpmath.cosh)
    sinh = _elementwise(mpmath.sinh)
    sin = _elementwise(mpmath.sin)
    cos = _elementwise(mpmath.cos)
    atan = _elementwise(mpmath.atan)
    erf = _elementwise(mpmath.erf)
    log1p = _elementwise(lambda x: _real_log(1 + x))
    expm1 = _elementwise(mpmath.expm1)
    sigmoid = _elementwise(lambda x: 1 / (1 + mpmath.exp(-x)))
    power = _elementwise(_real_power, 2)
    logaddexp = _elementwise(_logaddexp, 2)

    @staticmethod
    def reduce(kind, a, axis):
        if kind == "sum":
            return np.sum(a, axis=axis, keepdims=True)
        if kind == "mean":
            return np.sum(a, axis=axis, keepdims=True) / a.shape[axis]
        if kind == "max":
            return np.max(a, axis=axis, keepdims=True)
        top = np.max(a, axis=axis, keepdims=True)
        top = np.where(np.frompyfunc(mpmath.isinf, 1, 1)(top).astype(bool), mpmath.mpf(0), top)  # a row of -inf
        return top + _MPMath.log(np.sum(_MPMath.exp(a - top), axis=axis, keepdims=True))


MPMATH = _MPMath()


def _mp(array):
    if isinstance(array, np.ndarray) and array.dtype == object:
        return array
    values = np.nan_to_num(np.asarray(array, dtype=np.float64), nan=np.nan,
                           posinf=STAND_IN_FOR_INFINITY, neginf=-STAND_IN_FOR_INFINITY)
    return np.asarray(np.frompyfunc(mpmath.mpf, 1, 1)(values), dtype=object)


def _units(call):
    """The loss's shape (reduction 'none') and, per unit, how to take its piece of an argument.

    A unit is one loss element: an element of an elementwise loss (inputs
    of equal shapes), a row of a row-wise one (taken along the last axis).
    """
    loss = call.loss
    first = call.arrays[loss.inputs[0].name]
    if loss.kind == "elementwise":
        def take_element(item, array, index):
            if isinstance(item, ClassWeights):  # weights along the last axis
                return np.asarray(array)[index[-1]]
            return np.asarray(array)[index]
        return first.shape, take_element
    axis = call.axis % first.ndim

    def take(item, array, index):
        if isinstance(item, ClassWeights):  # the whole vector: each element reads its class's weight
            return np.asarray(array)
        if array.ndim == first.ndim:
            return np.moveaxis(array, axis, -1)[index]
        return np.asarray(array)[index][None]  # one value per row: kept as a length-1 row

    return tuple(n for i, n in enumerate(first.shape) if i != axis), take


def _unit_value(call, index, take, moved):
    loss = call.loss
    kept = kept_rows(call)
    if kept is not None and not kept[index]:
        return mpmath.mpf(0)  # an ignored row contributes nothing
    values = dict(call.params)
    classes = call.arrays[loss.inputs[0].name].shape[call.axis] if loss.kind == "rowwise" else None
    for item in loss.inputs:
        if item.name not in call.arrays:  # class weights not given: all 1
            values[item.name] = mpmath.mpf(1)
            continue
        array = moved[item.name] if moved and item.name in moved else call.arrays[item.name]
        piece = take(item, array, index)
        if isinstance(item, ClassTarget) and piece.shape == (1,):  # a class index: its one-hot row
            piece = (np.arange(classes) == int(piece[0])).astype(np.float64)
        values[item.name] = _mp(piece)
    infinite = [n for n in values if isinstance(values[n], np.ndarray) and n in call.arrays
                and np.any(np.abs(_mp_float(values[n])) >= STAND_IN_FOR_INFINITY)]
    if len(infinite) > 1:
        return mpmath.nan  # inf - inf and the like: no stand-in gives its meaning
    try:
        out = oracle.evaluate(loss, values, MPMATH, -1 if loss.kind == "rowwise" else None, call.flags)
    except (Undefined, ZeroDivisionError):
        return mpmath.nan
    out = np.asarray(out, dtype=object).reshape(-1)[0]
    if infinite and abs(out) > 1e200:
        return mpmath.inf if out > 0 else -mpmath.inf  # the stand-in stood for an infinity
    return out


def _mp_float(values):
    return np.asarray(np.frompyfunc(float, 1, 1)(np.asarray(values, dtype=object)), dtype=np.float64)


def truth_mp(call, moved=None):
    """The unreduced, unweighted loss in mpmath (an object array of mpf), NaN where the math is undefined.

    Each loss element is evaluated on its own, so an undefined operation
    (log of a negative number) makes only its own element undefined.
    ``moved`` replaces some float arrays by mpmath arrays (finite differences).
    """
    shape, take = _units(call)
    out = np.empty(shape, dtype=object)
    for index in np.ndindex(shape):
        out[index] = _unit_value(call, index, take, moved)
    return out


def truth_mp_gradient(call, name):
    """d(sum of the loss)/d(name) in mpmath by central differences (relative step 1e-12).

    Only the loss element the input element belongs to is re-evaluated. NaN
    where the input itself is not finite.
    """
    base = call.arrays[name]
    shape, take = _units(call)
    infinite = np.zeros(shape, dtype=bool)
    for item in call.loss.inputs:
        array = call.arrays.get(item.name)
        if array is not None and np.issubdtype(array.dtype, np.floating):
            for index in np.ndindex(shape):
                infinite[index] |= not np.all(np.isfinite(take(item, array, index)))
    rowwise = call.loss.kind == "rowwise"
    axis = call.axis % base.ndim if rowwise else None
    grad = np.empty(base.shape, dtype=object)
    for index in np.ndindex(base.shape):
        x = float(base[index])
        if not math.isfinite(x):
            grad[index] = mpmath.nan
            continue
        unit = tuple(i for d, i in enumerate(index) if d != axis) if rowwise and base.ndim == len(shape) + 1 else index
        if infinite[unit]:  # next to a stand-in for infinity no finite step is small enough
            grad[index] = mpmath.nan
            continue
        h = mpmath.mpf(1e-12 * max(1.0, abs(x)))
        values = []
        for sign in (1, -1):
            moved = _mp(base).copy()
            moved[index] = mpmath.mpf(x) + sign * h
            values.append(_unit_value(call, unit, take, {name: moved}))
        grad[index] = (values[0] - values[1]) / (2 * h)
    return grad


def mp_to_float(values):
    """mpmath values as float64 (overflowing to +-inf, NaN kept)."""
    convert = np.frompyfunc(lambda v: math.nan if mpmath.isnan(v) else float(v), 1, 1)
    with np.errstate(over="ignore"):
        return np.asarray(convert(np.asarray(values, dtype=object)), dtype=np.float64)
