"""The 14 losses of mlx.nn.losses, regenerated from specs, against three oracles.

1. mlx.nn.losses itself (values and mx.grad), float32, relative 1e-5.
2. The spec's formula interpreted independently (tests/oracle.py): float64
   numpy values, and mx.grad of its direct MLX evaluation.
3. Central finite differences of the float64 interpretation.
Every case draws fresh random inputs (seeded per test for reproducibility),
with every parameter at a non-default value in the "tweaked" cases.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import mlx.core as mx
import mlx.nn.losses as reference_losses
import numpy as np
import pytest

import generated
from generator.spec.load import load_spec
from tests import oracle
from tests.cases import ELEMENTWISE_SHAPES, MAKERS, ROWWISE_SHAPES

SPECS = Path(__file__).resolve().parent.parent / "specs"
REDUCTIONS = ("none", "mean", "sum")


def _cases():
    for name in MAKERS:
        loss = load_spec(SPECS / f"{name}.py")
        shapes = ELEMENTWISE_SHAPES if loss.kind == "elementwise" else ROWWISE_SHAPES
        for shape, axis in shapes:
            if name == "cosine_similarity_loss" and len(shape) < 2:
                continue
            for tweak in (False, True):
                yield pytest.param(name, shape, axis, tweak, id=f"{name}-{'x'.join(map(str, shape))}-{axis}-{tweak}")


def _draw(name, shape, axis, tweak, salt=""):
    seed = zlib.crc32(f"{name}{shape}{axis}{tweak}{salt}".encode())
    rng = np.random.default_rng(seed)
    return rng, MAKERS[name](rng, shape, axis, tweak)


def _relative_close(actual, expected, rtol, what):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(np.max(np.abs(expected), initial=0.0), 1e-30)
    error = np.max(np.abs(actual - expected), initial=0.0) / scale
    assert error <= rtol, f"{what}: relative error {error:.3g} > {rtol:g}"


def _call(function, case, reduction):
    return function(**case.arrays, **case.kwargs(), reduction=reduction)


def _grads(function, case, reduction, cotangent):
    names = list(case.differentiable)

    def objective(*diff):
        arrays = dict(case.arrays, **dict(zip(names, diff)))
        out = function(**arrays, **case.kwargs(), reduction=reduction)
        return mx.sum(out * cotangent)

    return dict(zip(names, _grad_tuple(objective, [case.arrays[n] for n in names])))


def _grad_tuple(objective, arrays):
    """mx.grad over every argument, always as a tuple (MLX unwraps a single one)."""
    grads = mx.grad(objective, argnums=tuple(range(len(arrays))))(*arrays)
    return grads if len(arrays) > 1 else (grads,)


def _cotangent(rng, case, name, reduction):
    shape = _call(getattr(generated, name), case, reduction).shape
    return mx.array(rng.uniform(0.5, 1.5, size=shape).astype(np.float32))


@pytest.mark.parametrize("name,shape,axis,tweak", list(_cases()))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_mlx_losses(name, shape, axis, tweak, reduction):
    rng, case = _draw(name, shape, axis, tweak)
    ours, theirs = getattr(generated, name), getattr(reference_losses, name)
    out = _call(ours, case, reduction)
    expected = _call(theirs, case, reduction)
    assert out.dtype == expected.dtype
    _relative_close(out, expected, 1e-5, "value")

    cotangent = _cotangent(rng, case, name, reduction)
    ours_grads = _grads(ours, case, reduction, cotangent)
    their_grads = _grads(theirs, case, reduction, cotangent)
    for arg in case.differentiable:
        _relative_close(ours_grads[arg], their_grads[arg], 1e-5, f"d/d{arg}")


def _oracle_kwargs(case, loss):
    axis = case.axis if case.axis is not None else (loss.axis if loss.kind == "rowwise" else None)
    defaults = {p.name: p.default for p in loss.params}
    params = {k: v for k, v in (defaults | case.params).items() if not isinstance(v, bool)}
    flags = {k: v for k, v in (defaults | case.params).items() if isinstance(v, bool)}
    return axis, params, flags


@pytest.mark.parametrize("name,shape,axis,tweak", list(_cases()))
def test_matches_symbolic_form(name, shape, axis, tweak):
    """Values vs the float64 interpretation; gradients vs autodiff of the MLX interpretation."""
    loss = load_spec(SPECS / f"{name}.py")
    rng, case = _draw(name, shape, axis, tweak, "oracle")
    oracle_axis, params, flags = _oracle_kwargs(case, loss)
    ours = getattr(generated, name)
    for reduction in REDUCTIONS:
        expected = oracle.reference(loss, case.arrays, params, oracle.NUMPY, oracle_axis, reduction,
                                    case.weights, flags)
        _relative_close(_call(ours, case, reduction), expected, 1e-5, f"value ({reduction})")

    cotangent = _cotangent(rng, case, name, "none")
    names = list(case.differentiable)

    def symbolic(*diff):
        arrays = dict(case.arrays, **dict(zip(names, diff)))
        out = oracle.reference(loss, arrays, params, oracle.MLX, oracle_axis, "none", case.weights, flags)
        return mx.sum(out * cotangent)

    autodiff = _grad_tuple(symbolic, [case.arrays[n] for n in names])
    derived = _grads(ours, case, "none", cotangent)
    for arg, expected in zip(names, autodiff):
        _relative_close(derived[arg], expected, 1e-5, f"d/d{arg}")


@pytest.mark.parametrize("name,shape,axis,tweak", [c for c in _cases() if np.prod(c.values[1]) <= 30])
def test_gradients_match_finite_differences(name, shape, axis, tweak):
    """float32 symbolic gradients vs float64 central differences of the formula."""
    loss = load_spec(SPECS / f"{name}.py")
    rng, case = _draw(name, shape, axis, tweak, "fd")
    oracle_axis, params, flags = _oracle_kwargs(case, loss)
    weights = None if case.weights is None else np.asarray(case.weights, dtype=np.float64)
    derived = _grads(getattr(generated, name), case, "mean", mx.array(1.0))
    step = 1e-6
    for arg in case.differentiable:
        base = {k: np.asarray(v, dtype=np.float64) if v.dtype != mx.int32 else np.asarray(v)
                for k, v in case.arrays.items()}
        expected = np.zeros(base[arg].shape)
        for index in np.ndindex(base[arg].shape):
            values = []
            for sign in (1, -1):
                moved = dict(base)
                moved[arg] = base[arg].copy()
                moved[arg][index] += sign * step
                values.append(oracle.reference(loss, moved, params, oracle.NUMPY, oracle_axis, "mean",
                                               weights, flags))
            expected[index] = (values[0] - values[1]) / (2 * step)
        _relative_close(derived[arg], expected, 1e-4, f"d/d{arg}")


@pytest.mark.parametrize("name", list(MAKERS))
def test_value_and_grad_under_compile(name):
    loss = load_spec(SPECS / f"{name}.py")
    shape, axis = (ELEMENTWISE_SHAPES if loss.kind == "elementwise" else ROWWISE_SHAPES)[-1]
    _, case = _draw(name, shape, axis, True, "compile")
    names = list(case.differentiable)
    ours = getattr(generated, name)

    def objective(*diff):
        arrays = dict(case.arrays, **dict(zip(names, diff)))
        return ours(**arrays, **case.kwargs(), reduction="mean")

    step = mx.value_and_grad(objective, argnums=tuple(range(len(names))))
    inputs = [case.arrays[n] for n in names]
    eager_value, eager_grads = step(*inputs)
    compiled_value, compiled_grads = mx.compile(step)(*inputs)
    if len(names) == 1:
        eager_grads, compiled_grads = (eager_grads,), (compiled_grads,)
    _relative_close(compiled_value, eager_value, 1e-6, "value")
    for arg, a, b in zip(names, compiled_grads, eager_grads):
        _relative_close(a, b, 1e-6, f"d/d{arg}")
