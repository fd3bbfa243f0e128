"""Real parameters given as one-element arrays: a scheduled ``delta``, a learnt ``margin``.

MLX's own losses take them (their arithmetic is MLX's), so ours must too,
lazily (no host sync, so inside ``mx.compile`` as well) and differentiably:
the gradient in a parameter is checked against float64 central differences
of the oracle (tests/oracle.py), never against our own number-parameter path.
Each spec's real parameters are taken at their default and at a second value
in range, the 0 that the 0 * inf guards test included.
"""

from __future__ import annotations

import inspect
import math
import zlib
from dataclasses import replace

import mlx.core as mx
import mlx.nn.losses as mlx_losses
import numpy as np
import pytest

from tests.arguments import LOSSES, MLX_LOSSES, make_call, ours, truth64

STEP = 1e-6


def _float_params(loss):
    return [p for p in loss.numeric_params if not p.integer and not p.optional]


def _second_value(param):
    """A value in the parameter's range other than its default (off the middle: sigmoid_focal_loss's
    alpha jumps at 0, the middle of its range)."""
    low, high = param.range.low, param.range.high
    if math.isfinite(low) and math.isfinite(high):
        return low + 0.7 * (high - low) if low + 0.7 * (high - low) != param.default else low + 0.4 * (high - low)
    return param.default + 0.5


CASES = [
    pytest.param(name, param.name, value, id=f"{name}[{param.name}={value:g}]")
    for name, loss in LOSSES.items() for param in _float_params(loss)
    for value in dict.fromkeys([float(param.default), _second_value(param)])
]


def _call(name, param, value):
    rng = np.random.default_rng(zlib.crc32(f"array params {name} {param} {value}".encode()))
    call = make_call(LOSSES[name], rng)
    return replace(call, params={**call.params, param: value})


def _loss_in(call, param):
    """Ours, summed, as a function of ``param`` (the other parameters as numbers)."""
    arrays, extra = call.mx_arrays(), call.kwargs()
    return lambda value: ours(call.name)(**arrays, **{**extra, param: value}, reduction="sum")


def _difference(call, param):
    """d(sum of the loss)/d(param) by float64 central differences of the oracle."""
    value = call.params[param]
    h = STEP * max(1.0, abs(value))
    moved = lambda v: float(np.sum(truth64(replace(call, params={**call.params, param: v}))))
    return (moved(value + h) - moved(value - h)) / (2 * h)


def _close(got, want, what):
    assert math.isfinite(want), f"{what}: the reference is not finite"
    assert abs(float(got) - want) <= 2e-4 * max(1.0, abs(want)), f"{what}: {float(got)}, expected {want}"


@pytest.mark.parametrize("name,param,value", CASES)
def test_a_parameter_given_as_an_array_gives_the_loss_and_its_derivative(name, param, value):
    call = _call(name, param, value)
    loss_in = _loss_in(call, param)
    as_array = mx.array(value)
    _close(loss_in(as_array), float(np.sum(truth64(call))), "the loss")
    want = _difference(call, param)
    _close(mx.grad(loss_in)(as_array), want, "mx.grad in the parameter")
    _close(mx.jvp(lambda v: [loss_in(v)], [as_array], [mx.array(1.0)])[1][0], want, "mx.jvp in the parameter")
    compiled = mx.compile(mx.value_and_grad(loss_in))  # the parameter an input of the compiled step
    _close(compiled(as_array)[1], want, "compiled value_and_grad in the parameter")


@pytest.mark.parametrize("name", sorted(n for n in MLX_LOSSES if any(
    p.name in inspect.signature(getattr(mlx_losses, n)).parameters for p in _float_params(LOSSES[n]))))
def test_array_parameters_follow_mlx_nn_losses(name):
    """Value, dtype (a float32 array parameter promotes half inputs, as MLX's ops do) and the
    parameter's gradient, against mlx.nn.losses with the same array parameters."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    call = make_call(LOSSES[name], rng)
    accepted = inspect.signature(getattr(mlx_losses, name)).parameters
    params = {p.name: _second_value(p) for p in _float_params(call.loss) if p.name in accepted}
    for dtype in (mx.float32, mx.float16):
        arrays = call.mx_arrays(dtype)
        for param in params:
            given = lambda v: {**params, param: v}
            mine = lambda v: ours(name)(**arrays, **given(v), reduction="sum")
            theirs = lambda v: getattr(mlx_losses, name)(**arrays, **given(v), reduction="sum")
            value = mx.array(params[param])
            assert mine(value).dtype == theirs(value).dtype == mx.float32
            np.testing.assert_allclose(np.array(mine(value)), np.array(theirs(value)), rtol=2e-3 if dtype == mx.float16 else 1e-5)
            np.testing.assert_allclose(np.array(mx.grad(mine)(value)), np.array(mx.grad(theirs)(value)),
                                       rtol=2e-3 if dtype == mx.float16 else 1e-5, atol=1e-6)


def test_a_parameter_given_as_an_array_takes_the_mlx_path_on_a_gpu(monkeypatch):
    """The kernels read parameters as numbers: an array parameter is computed by the MLX bodies."""
    module = __import__("generated.huber_loss", fromlist=["_gpu"])
    monkeypatch.setattr(module._gpu, "backend_for", lambda *args: "metal")
    monkeypatch.setattr(module._kernels, "huber_loss", lambda *args: pytest.fail("the kernels were given an array parameter"))
    x, y = mx.array([0.5, -3.0]), mx.array([0.0, 0.0])
    assert np.allclose(np.array(module.huber_loss(x, y, delta=mx.array(1.0))), [0.125, 2.5])


@pytest.mark.parametrize("value,message", [
    (mx.array([1.0, 2.0]), "Delta must be a number or a one-element real array, got an array of shape (2,)"),
    (mx.array(True), "Delta must be a number or a one-element real array"),
])
def test_a_parameter_array_of_more_than_one_real_is_refused(value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ours("huber_loss")(mx.zeros(2), mx.zeros(2), delta=value)


def test_an_integer_parameter_wants_a_python_int():
    with pytest.raises(ValueError, match="Ignore index must be an integer"):
        ours("cross_entropy")(mx.zeros((2, 3)), mx.array([0, 1]), ignore_index=mx.array(1))
