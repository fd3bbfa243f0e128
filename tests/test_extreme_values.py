"""Extreme inputs: finite wherever the math is finite, never NaN for a finite answer; NaN in, NaN out.

Each pattern of extreme values (logits of +-1e4, differences of 1e30,
variances and other values near 0, probabilities of exactly 0 and 1,
log-probabilities of -inf) is put into one float input of every loss, the
others drawn in their domain. The truth is the formula evaluated in 30-digit
mpmath, where nothing overflows (tests/arguments.py). Then, per loss element:

* where the true loss is finite and fits in float32, ours is finite and close;
  where it is finite but beyond float32, ours overflows to inf, never NaN;
* where the true gradient is finite, ours is not NaN (finite if it fits);
* where mlx.nn.losses' value or gradient is finite, ours is too.

Empty and 0-d arrays, and NaN inputs, are checked for every loss as well.
"""

from __future__ import annotations

import zlib

import mlx.core as mx
import numpy as np
import pytest

from generator.spec import Select, Term
from tests.arguments import (DOMAINS, FLOAT32_MAX, LOSSES, MLX_LOSSES, Domain, element_inputs, float_inputs,
                             in_domain, make_call, unit_scale, mp_to_float, ours, theirs, truth64, truth_mp, truth_mp_gradient,
                             variant_id, variants)

SHAPE = (2, 4)
PATTERNS = {
    "logits_1e4": [[1e4, -1e4, 0.5, -1e4], [-1e4, 1e4, 1e4, -3.0]],
    "differences_1e30": [[1e30, -1e30, 0.5, 1e30], [-1e30, 2.0, 1e30, -1e30]],
    "near_zero": [[0.0, 1e-30, 1e-45, -1e-30], [1e-38, 0.0, -1e-45, 1e-7]],
    "probabilities_0_1": [[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]],
    "log_probability_minus_inf": [[-np.inf, 0.0, -np.inf, -1.0], [-0.5, -np.inf, -np.inf, -2.0]],
}

# Known gaps, shared with mlx.nn.losses: a row norm squares 1e30 (1e60 overflows float32)
# before its square root would bring it back into range; the loss is NaN.
OVERFLOW_INSIDE_NORMS = {
    ("cosine_similarity_loss", "all", "differences_1e30"),
    ("cosine_embedding_loss", "all", "differences_1e30"),
    ("triplet_loss", "anchors", "differences_1e30"),
    ("triplet_loss", "positives", "differences_1e30"),
    ("triplet_margin_loss", "anchors", "differences_1e30"),
    ("triplet_margin_loss", "positives", "differences_1e30"),
}
# The same for losses MLX lacks: sqrt(d**2 + eps**2) squares 1e30 first, and the loss is inf, not 1e30.
OVERFLOW_INSIDE_SQUARE_ROOTS = {
    (name, target, "differences_1e30") for name in ("charbonnier_loss", "pseudo_huber_loss")
    for target in ("inputs", "targets")
}


def _array(values):
    return np.asarray(values, dtype=np.float64)


def _cases():
    for name, loss in LOSSES.items():
        log_probabilities = DOMAINS.get(name, Domain()).log_probabilities
        for flags, form in variants(loss):
            for pattern in PATTERNS:
                inputs = [i.name for i in element_inputs(loss)]
                if pattern == "log_probability_minus_inf":  # -inf means p = 0 only for a log-probability
                    inputs = [n for n in inputs if n in log_probabilities]
                for target in inputs + (["all"] if len(inputs) > 1 else []):
                    marks = []
                    if (name, target, pattern) in OVERFLOW_INSIDE_NORMS:
                        marks = [pytest.mark.xfail(strict=True, reason="overflow inside a row norm, as in MLX")]
                    if (name, target, pattern) in OVERFLOW_INSIDE_SQUARE_ROOTS:
                        marks = [pytest.mark.xfail(strict=True, reason="overflow of a square inside a square root")]
                    yield pytest.param(name, flags, form, target, pattern, marks=marks,
                                       id=f"{name}-{variant_id(flags, form)}-{target}-{pattern}")


def _grads(function, call, names, reduction="none"):
    """d(sum of the loss)/d(name) for each name: the vjp with a cotangent of ones (no mx.sum of the loss)."""
    arrays = call.mx_arrays()

    def loss_of(*diff):
        return function(**{**arrays, **dict(zip(names, diff))}, **call.kwargs(), reduction=reduction)

    primals = [arrays[n] for n in names]
    out = loss_of(*primals)
    _, grads = mx.vjp(loss_of, primals, [mx.ones(out.shape, out.dtype)])
    return {n: np.asarray(g, dtype=np.float64) for n, g in zip(names, grads)}


def _per_input(call, arg, mask):
    """A per-loss-element mask spread over the elements of input ``arg`` that feed each loss element."""
    shape = call.arrays[arg].shape
    if call.loss.kind == "rowwise" and len(shape) == mask.ndim + 1:
        mask = np.expand_dims(mask, call.axis)
    return np.broadcast_to(mask, shape)


@pytest.mark.parametrize("name,flags,form,target,pattern", list(_cases()))
def test_extreme_values_stay_finite_where_the_math_is(name, flags, form, target, pattern):
    loss = LOSSES[name]
    rng = np.random.default_rng(zlib.crc32(f"{name}{flags}{form}{target}{pattern}".encode()))
    call = make_call(loss, rng, SHAPE, axis=-1 if loss.kind == "rowwise" else None, flags=flags, form=form)
    if target == "all":
        inputs = [i.name for i in element_inputs(loss)]
        if pattern == "log_probability_minus_inf":
            inputs = [n for n in inputs if n in DOMAINS[name].log_probabilities]
    else:
        inputs = [target]
    # the truth is the math at the float32 values the loss receives (1e-45 is 1.4e-45 in float32)
    call = call.with_arrays(**{n: _array(PATTERNS[pattern]) for n in inputs}).rounded(mx.float32)

    value = np.asarray(call.run(ours(name)), dtype=np.float64)
    meaningful = in_domain(call)
    truth = np.where(meaningful, mp_to_float(truth_mp(call)), np.nan)
    representable = np.isfinite(truth) & (np.abs(truth) <= FLOAT32_MAX)
    assert np.isfinite(value[representable]).all(), f"not finite where the loss is {truth[representable]}"
    # float32 rounds terms of the inputs' size: allow a few of their ulps (plus 1e-3 relative)
    allowed = 1e-3 * np.abs(truth) + 8 * np.spacing(unit_scale(call).astype(np.float32)).astype(np.float64) + 1e-6
    with np.errstate(invalid="ignore"):
        error = np.abs(value - truth)
    assert (error[representable] <= allowed[representable]).all(), \
        f"loss {value[representable]} vs the math {truth[representable]}"
    overflow = np.isfinite(truth) & ~representable
    assert not np.isnan(value[overflow]).any(), "NaN where the loss is finite (beyond float32)"

    names = call.differentiable
    grads = _grads(ours(name), call, names)
    for arg in names:
        true_grad = np.where(_per_input(call, arg, meaningful), mp_to_float(truth_mp_gradient(call, arg)), np.nan)
        fits = np.isfinite(true_grad) & (np.abs(true_grad) <= FLOAT32_MAX / 4)
        assert np.isfinite(grads[arg][fits]).all(), f"d/d{arg} not finite where it is {true_grad[fits]}"
        assert not np.isnan(grads[arg][np.isfinite(true_grad)]).any(), f"d/d{arg} NaN where it is finite"

    if name in MLX_LOSSES:
        reference = np.asarray(call.run(theirs(name)), dtype=np.float64)
        assert np.isfinite(value[np.isfinite(reference) & meaningful]).all(), "not finite where mlx.nn.losses is"
        reference_grads = _grads(theirs(name), call, names)
        for arg in names:
            where = np.isfinite(reference_grads[arg]) & _per_input(call, arg, meaningful)
            assert np.isfinite(grads[arg][where]).all(), f"d/d{arg} not finite where mlx.nn.losses' is"


PROBABILITY_TARGETS = [name for name, loss in LOSSES.items() if any(t.probabilities for t in loss.class_targets)]


@pytest.mark.parametrize("name", PROBABILITY_TARGETS)
@pytest.mark.parametrize("pattern", ["logits_1e4", "log_probability_minus_inf"])
def test_one_hot_probability_targets_with_extreme_logits(name, pattern):
    """Probabilities of exactly 0 and 1 as targets: a 0 takes no part, even against a -inf logit."""
    loss = LOSSES[name]
    call = make_call(loss, np.random.default_rng(2), SHAPE, axis=-1, form="probabilities")
    target = loss.class_targets[0].name
    call = call.with_arrays(**{loss.inputs[0].name: _array(PATTERNS[pattern]),
                               target: _array([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])})
    value = np.asarray(call.run(ours(name)), dtype=np.float64)
    truth = mp_to_float(truth_mp(call))
    assert not np.isnan(value[np.isfinite(truth)]).any()
    np.testing.assert_allclose(value[np.isfinite(truth)], truth[np.isfinite(truth)], rtol=1e-5)
    grads = _grads(ours(name), call, call.differentiable)
    logits = call.arrays[loss.inputs[0].name]
    assert np.isfinite(grads[loss.inputs[0].name]).all()
    # d/dt of -t * z: the logit (relative to the row's maximum), so infinite exactly at a -inf logit
    assert (np.isfinite(grads[target]) == np.isfinite(logits)).all()


# ------------------------------------------------------------ empty and 0-d arrays

def _empty_layouts(loss):
    if loss.kind == "elementwise":
        return {"empty": (0,), "empty_2d": (0, 3)}
    return {"no_rows": (0, 4), "empty_rows": (3, 0)}


EMPTY_CASES = [pytest.param(name, layout, shape, reduction, id=f"{name}-{layout}-{reduction}")
               for name, loss in LOSSES.items() for layout, shape in _empty_layouts(loss).items()
               for reduction in ("none", "mean", "sum")]


@pytest.mark.parametrize("name,layout,shape,reduction", EMPTY_CASES)
def test_empty_arrays_reduce_like_mlx(name, layout, shape, reduction):
    """An empty loss is empty; its sum is 0 and its mean NaN (0/0), as mlx.nn.losses gives; no crash."""
    loss = LOSSES[name]
    call = make_call(loss, np.random.default_rng(0), shape, axis=-1 if loss.kind == "rowwise" else None)
    try:
        value = call.run(ours(name), reduction)
        mx.eval(value)
    except ValueError as error:
        # Only where MLX cannot either (e.g. logsumexp of an empty array).
        if name in MLX_LOSSES:
            with pytest.raises(ValueError):
                mx.eval(call.run(theirs(name), reduction))
            return
        assert layout == "empty_rows" and loss.class_targets, f"{name} raised {error}"
        return
    rows = shape if loss.kind == "elementwise" else shape[:-1]
    assert value.shape == (rows if reduction == "none" else ())
    if reduction == "sum" and 0 in rows:
        assert float(value) == 0.0
    if reduction == "mean" and 0 in rows:
        assert np.isnan(float(value))
    no_class_inside = layout == "empty_rows" and bool(loss.class_targets)
    if no_class_inside:
        # no class index is inside a row of no classes: every row is NaN (tests/test_out_of_range_classes.py)
        assert np.all(np.isnan(np.asarray(value)))
    elif name in MLX_LOSSES:
        try:
            reference = call.run(theirs(name), reduction)
            mx.eval(reference)
        except ValueError:
            reference = None  # MLX cannot (logsumexp of an empty array): ours may do better
        if reference is not None:
            np.testing.assert_array_equal(np.asarray(value), np.asarray(reference))
    grads = _grads(ours(name), call, call.differentiable)
    for arg in call.differentiable:
        assert grads[arg].shape == call.arrays[arg].shape


@pytest.mark.parametrize("name", list(LOSSES))
def test_no_reduction_of_an_empty_array(monkeypatch, name):
    """Empty rows and empty losses are reduced without MLX reductions.

    MLX 0.32's CPU backend can hang (spinning) when one evaluation holds two
    or more sums over zero-length axes; the generated code writes their
    values (0, NaN) out instead. Uncompiled, so every reduction is seen.
    """
    for function in ("sum", "mean"):
        def refuse_empty(values, *args, _original=getattr(mx, function), _function=function, **kwargs):
            assert values.size, f"mx.{_function} of an empty array"
            return _original(values, *args, **kwargs)
        monkeypatch.setattr(mx, function, refuse_empty)
    loss = LOSSES[name]
    mx.disable_compile()
    try:
        for shape in _empty_layouts(loss).values():
            call = make_call(loss, np.random.default_rng(0), shape, axis=-1 if loss.kind == "rowwise" else None)
            for reduction in ("none", "mean", "sum"):
                try:
                    mx.eval(call.run(ours(name), reduction))
                except ValueError:
                    continue  # a maximum (or a class index) in an empty row: as MLX, an error
                _grads(ours(name), call, call.differentiable, reduction)
    finally:
        mx.enable_compile()


ELEMENTWISE = [name for name, loss in LOSSES.items() if loss.kind == "elementwise"]


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_zero_dimensional_arrays_are_one_element(name, reduction):
    loss = LOSSES[name]
    call = make_call(loss, np.random.default_rng(3), ())
    value = call.run(ours(name), reduction)
    assert value.shape == ()
    as_vectors = call.with_arrays(**{k: v.reshape(1) for k, v in call.arrays.items()})
    np.testing.assert_allclose(float(value), np.ravel(truth64(as_vectors, reduction))[0], rtol=1e-5)
    for arg, grad in _grads(ours(name), call, call.differentiable).items():
        assert grad.shape == ()
        if name in MLX_LOSSES:
            np.testing.assert_allclose(grad, _grads(theirs(name), call, [arg])[arg], rtol=1e-5)


# ------------------------------------------------------------ NaN inputs

def _uses(loss, flags, name):
    """Whether the loss (with these flags) depends on the input at all."""
    expr = loss.formula
    while any(isinstance(s, Term) for s in expr.free_symbols):
        expr = expr.xreplace({s: s.definition for s in expr.free_symbols if isinstance(s, Term)})
    expr = expr.replace(lambda e: isinstance(e, Select), lambda e: e.args[1] if flags[e.args[0].name] else e.args[2])
    return name in {s.name for s in expr.free_symbols}


NAN_CASES = [pytest.param(name, flags, form, item.name, id=f"{name}-{variant_id(flags, form)}-{item.name}")
             for name, loss in LOSSES.items() for flags, form in variants(loss) for item in float_inputs(loss)]


@pytest.mark.parametrize("name,flags,form,arg", NAN_CASES)
def test_nan_in_gives_nan_out(name, flags, form, arg):
    """A NaN element (a NaN row, for a row-wise loss) gives a NaN loss there, the others stay exact."""
    loss = LOSSES[name]
    if not _uses(loss, flags, arg):
        pytest.skip(f"{arg} does not enter this variant")
    call = make_call(loss, np.random.default_rng(5), (3, 4), axis=-1 if loss.kind == "rowwise" else None,
                     flags=flags, form=form, weights=True)
    poisoned = call.arrays[arg].copy()
    if loss.kind == "elementwise" or poisoned.ndim == 1:
        poisoned[(1,) * poisoned.ndim] = np.nan
    else:
        poisoned[1] = np.nan  # the whole row 1
    call = call.with_arrays(**{arg: poisoned})
    value = np.asarray(call.run(ours(name)), dtype=np.float64)
    bad = np.zeros(value.shape, dtype=bool)
    bad[(1,) * value.ndim] = True
    assert np.isnan(value[bad]).all(), f"NaN in {arg} gave {value[bad]}"
    truth = truth64(call)
    np.testing.assert_allclose(value[~bad], truth[~bad], rtol=1e-5, atol=1e-6)
    for reduction in ("mean", "sum"):
        assert np.isnan(float(call.run(ours(name), reduction)))
    grads = _grads(ours(name), call, call.differentiable)  # no crash
    if name in MLX_LOSSES:
        # Gradients follow MLX's autodiff: a comparison with NaN selects the last branch.
        reference = _grads(theirs(name), call, call.differentiable)
        for arg in call.differentiable:
            where = np.isfinite(reference[arg])
            assert np.isfinite(grads[arg][where]).all(), f"d/d{arg} not finite where mlx.nn.losses' is"


@pytest.mark.parametrize("name", [n for n, loss in LOSSES.items() if loss.weights is not None])
def test_nan_weight_gives_nan(name):
    loss = LOSSES[name]
    call = make_call(loss, np.random.default_rng(6), (3, 4), weights=True)
    weights = call.weights.copy()
    weights.flat[1] = np.nan
    value = np.asarray(ours(name)(**call.mx_arrays(), **{**call.kwargs(), loss.weights.name: mx.array(weights.astype(np.float32))},
                                  reduction="none"))
    assert np.isnan(value.flat[1]) and np.isfinite(np.delete(value.ravel(), 1)).all()


SELECTIONS_SPEC = """
from sympy import Piecewise
from generator.spec import Input, Loss

x = Input("scores")
spec = Loss("selections", inputs=[x], reduction="none",
            elementwise=Piecewise((x**2, x < 1), (1, True)) + Piecewise((1, x > 2), (0, True)))
"""


def test_nan_through_selections_with_constant_branches(tmp_path):
    """A comparison with NaN is false both ways: a selection must not answer a constant branch for it.

    (No loss in specs/ has such a selection today: they are all max/min, which propagate NaN.)
    """
    from tests.helpers import build_package

    function = build_package(tmp_path, {"selections": SELECTIONS_SPEC}).selections
    value = np.asarray(function(mx.array([0.5, 1.5, 3.0, np.nan])))
    np.testing.assert_allclose(value[:3], [0.25, 1.0, 2.0])
    assert np.isnan(value[3])
    grad = np.asarray(mx.grad(lambda x: mx.sum(function(x)))(mx.array([0.5, 1.5, 3.0])))
    np.testing.assert_allclose(grad, [1.0, 0.0, 0.0])
