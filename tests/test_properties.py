"""Property-based tests (hypothesis) over shapes, axes, dtypes, parameters, flags, weights and values.

For every loss in specs/ and every drawn call:

* the result has the loss's shape (or is a scalar when reduced) and MLX's result dtype;
* it matches the float64 interpretation of the formula (tests/oracle.py)
  to float32 rounding (one half-precision ulp for float16/bfloat16);
* ``mean`` and ``sum`` are the mean and sum of ``none``, and weights multiply it;
* gradients (float32) have the inputs' shapes and dtypes and match autodiff of
  a direct MLX evaluation of the formula (tests/oracle.py), away from kinks;
* for the losses mlx.nn.losses also has, values match it.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from generator.spec import ClassTarget, ClassWeights
from tests import oracle
from tests.arguments import (LOSSES, MLX_LOSSES, Call, finite_differences, has_twin, into_domain, kept_rows, ours,
                             shapes_for, theirs, truth64, variants)

UNIT = {mx.float32: 2.0**-23, mx.float16: 2.0**-10, mx.bfloat16: 2.0**-7}
VALUES = st.floats(-6.0, 6.0, width=32, allow_subnormal=False)


def _param(p):
    """The default or one of two values inside the range.

    Few distinct values on purpose: a parameter is a constant of the compiled
    kernels, so every new value compiles them again (seconds on the CPU).
    """
    r = p.range
    low = r.low if math.isfinite(r.low) else -2.0
    high = min(r.high, low + 3.0) if math.isfinite(r.high) else low + 3.0
    inside = [low + (high - low) * f for f in (0.25, 0.75)]
    inside = [round(v) if p.integer else v for v in inside]
    return st.sampled_from([p.default] + [v for v in inside if r.contains(v)])


@st.composite
def calls(draw, loss):
    """A call of ``loss``: shape, axis, flags, target form, parameters, weights and values."""
    rowwise = loss.kind == "rowwise"
    ndim = draw(st.integers(1 if rowwise else 0, 3))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
    axis = draw(st.integers(-ndim, ndim - 1)) if rowwise else None
    flags, form = draw(st.sampled_from(list(variants(loss))))
    element_shape, row_shape = shapes_for(loss, shape, axis)
    values = {}
    for item in loss.inputs:
        if isinstance(item, ClassWeights):
            if element_shape and draw(st.booleans()):  # optional: one weight per class
                classes = element_shape[-1 if axis is None else axis]
                values[item.name] = draw(arrays(np.float64, (classes,), elements=st.floats(0.0, 2.0, width=32)))
        elif isinstance(item, ClassTarget):
            if form == "probabilities":
                logits = draw(arrays(np.float64, element_shape, elements=VALUES))
                z = np.exp(logits - logits.max(axis=axis, keepdims=True))
                values[item.name] = z / z.sum(axis=axis, keepdims=True)
            else:
                classes = element_shape[axis]
                values[item.name] = draw(arrays(np.int64, row_shape, elements=st.integers(0, classes - 1)))
        else:
            values[item.name] = draw(arrays(np.float64, row_shape if item.per_row else element_shape,
                                            elements=VALUES))
    params = {p.name: draw(_param(p)) for p in loss.numeric_params}
    weights = None
    if loss.weights is not None and draw(st.booleans()):
        weights = draw(arrays(np.float64, row_shape, elements=st.floats(0.0, 2.0, width=32)))
    return into_domain(Call(loss, values, params, flags, axis, weights))


def _close(actual, expected, unit, what):
    actual = np.asarray(actual.astype(mx.float32), dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    # the finite values' scale: an infinite one would make the tolerance infinite (and the check empty)
    scale = max(np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=64 * unit, atol=64 * unit * scale, err_msg=what)


def _mean(call, total, size):
    """``total`` over the loss elements a mean divides by: all, or the rows whose class is not ignore_index."""
    kept = kept_rows(call)
    if kept is None:
        return total / max(size, 1)
    with np.errstate(invalid="ignore"):
        return np.float64(total) / np.sum(kept)  # every row ignored: 0/0, NaN


def _check(loss, call, dtype, reduction):
    name = loss.name
    exact = call.rounded(dtype)  # the values the dtype can hold: the truth is taken at those
    value = exact.run(ours(name), reduction, dtype)
    expected_dtype = exact.run(theirs(name), reduction, dtype).dtype if has_twin(call) else dtype
    assert value.dtype == expected_dtype
    none = exact.run(ours(name), "none", dtype)
    loss_shape = shapes_for(loss, next(iter(call.arrays.values())).shape, call.axis)[1] if loss.kind == "rowwise" \
        else np.broadcast_shapes(*[call.arrays[i.name].shape for i in loss.inputs if not isinstance(i, ClassWeights)])
    assert none.shape == tuple(loss_shape)
    assert value.shape == (none.shape if reduction == "none" else ())
    _close(value, truth64(exact, reduction), UNIT[dtype], f"value ({reduction}, {dtype})")

    # The reductions are those of the unreduced loss.
    if reduction != "none" and dtype == mx.float32:
        total = np.sum(np.asarray(none, dtype=np.float64))
        expected = _mean(call, total, none.size) if reduction == "mean" else total
        if none.size:
            _close(value, expected, UNIT[dtype], f"{reduction} of none")

    if has_twin(call) and dtype == mx.float32:
        _close(value, exact.run(theirs(name), reduction, dtype), UNIT[dtype], "vs mlx.nn.losses")


def _check_gradients(loss, call, reduction):
    """float32 gradients vs autodiff of the formula, away from kinks.

    Where that autodiff is not finite (0/0 of a textbook form the generated
    code avoids), central differences of the float64 formula stand in.
    """
    names = call.differentiable
    if not names:
        return
    exact = call.rounded(mx.float32)
    arrays = exact.mx_arrays()
    weights = exact.kwargs().get(loss.weights.name) if loss.weights is not None else None
    start = [arrays[n] for n in names]

    def ours_objective(*diff):
        return mx.sum(ours(loss.name)(**{**arrays, **dict(zip(names, diff))}, **exact.kwargs(), reduction=reduction))

    def symbolic_objective(*diff):
        values = {**arrays, **dict(zip(names, diff))}
        return mx.sum(oracle.reference(loss, values, exact.params, oracle.MLX, exact.axis, reduction, weights,
                                       exact.flags))

    argnums = tuple(range(len(names)))
    derived = mx.grad(ours_objective, argnums=argnums)(*start)
    autodiff = mx.grad(symbolic_objective, argnums=argnums)(*start)
    derived, autodiff = (derived, autodiff) if len(names) > 1 else ((derived,), (autodiff,))
    for arg, grad, reference in zip(names, derived, autodiff):
        assert grad.shape == arrays[arg].shape and grad.dtype == arrays[arg].dtype
        differences, kink = finite_differences(exact, arg, reduction)
        reference = np.asarray(reference, dtype=np.float64)
        expected = np.where(np.isfinite(reference), reference, differences)
        actual = np.asarray(grad, dtype=np.float64)
        scale = max(np.max(np.abs(expected[~kink]), initial=0.0), 1.0)
        np.testing.assert_allclose(actual[~kink], expected[~kink], rtol=1e-3, atol=1e-4 * scale,
                                   err_msg=f"d/d{arg} ({reduction})")


@pytest.fixture(scope="module", autouse=True)
def eager():
    """Run the generated functions uncompiled here.

    Compiling is semantics-preserving (tests/test_mlx_parity.py checks
    compiled against eager for each loss, and the other robustness tests run
    compiled); on the CPU each new shape, axis or dtype drawn here would
    compile new kernels, about a second each.
    """
    mx.disable_compile()
    yield
    mx.enable_compile()


@pytest.mark.parametrize("name", list(LOSSES))
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_loss_properties(name, data):
    loss = LOSSES[name]
    call = data.draw(calls(loss), label="call")
    dtype = data.draw(st.sampled_from([mx.float32, mx.float32, mx.float16, mx.bfloat16]), label="dtype")
    reduction = data.draw(st.sampled_from(["none", "mean", "sum"]), label="reduction")
    _check(loss, call, dtype, reduction)
    if dtype == mx.float32:
        _check_gradients(loss, call, reduction)


BROADCASTING = [name for name, loss in LOSSES.items() if loss.broadcast]


@pytest.mark.parametrize("name", BROADCASTING)
def test_inputs_of_fewer_dimensions_broadcast_and_the_axis_counts_in_the_broadcast_shape(name):
    """As MLX: the first input (4,) against (3, 4) others; axis -1 is the last axis of the broadcast shape."""
    loss = LOSSES[name]
    rng = np.random.default_rng(9)
    axis = -1 if loss.kind == "rowwise" else None
    call = into_domain(Call(loss, {i.name: rng.normal(size=(3, 4)) for i in loss.inputs},
                            {p.name: p.default for p in loss.numeric_params}, {f.name: f.default for f in loss.flags},
                            axis))
    first = loss.inputs[0].name
    arrays = call.mx_arrays()
    arrays[first] = arrays[first][0]
    value = ours(name)(**arrays, **call.kwargs(), reduction="none")
    broadcast = call.with_arrays(**{first: np.broadcast_to(call.arrays[first][0], (3, 4))})
    np.testing.assert_allclose(np.asarray(value), truth64(broadcast), rtol=1e-5, atol=1e-6)
    if name in MLX_LOSSES:
        np.testing.assert_allclose(np.asarray(value), np.asarray(theirs(name)(**arrays, **call.kwargs(),
                                                                             reduction="none")), rtol=1e-5)
