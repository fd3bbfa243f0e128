"""Second order and forward mode: every loss, every variant, every differentiable input.

Hessian-vector products three ways (reverse over reverse, forward over
reverse, reverse over forward) and the loss's own ``mx.jvp`` must equal

* autodiff of the symbolic form (tests/oracle.py evaluated with MLX ops,
  differentiated by MLX itself), in float32; and
* float64 central differences of the generated gradient along the same
  direction (the generated code runs in float64 too), which checks the
  derivative of the derived gradient without any oracle.

Inputs are drawn in each loss's domain, away from kinks (a random point is
almost surely not on one). Weights are given where the loss takes them, so
their gradient's own derivative is checked too.
"""

from __future__ import annotations

import zlib

import mlx.core as mx
import numpy as np
import pytest

from tests import oracle
from tests.arguments import LOSSES, make_call, ours, variant_id, variants

CASES = [
    pytest.param(name, flags, form, id=f"{name}[{variant_id(flags, form)}]")
    for name, loss in LOSSES.items() for flags, form in variants(loss)
]
STEP = 1e-6  # float64 central differences: error ~ STEP**2 * third derivative, rounding ~ 1e-16 / STEP


# Domains whose natural points sit on a kink: Poisson counts are where the Stirling term starts
# (t = 1, a jump) and where its log is infinite (t = 0); derivatives are taken between counts.
BETWEEN_KINKS = {"poisson_nll_loss": lambda call: call.with_arrays(targets=call.arrays["targets"] + 0.25)}


def _call(name, flags, form):
    loss = LOSSES[name]
    rng = np.random.default_rng(zlib.crc32(f"second order {name} {flags} {form}".encode()))
    call = make_call(loss, rng, flags=flags, form=form, weights=True)
    return BETWEEN_KINKS.get(name, lambda call: call)(call)


def _functions(call, dtype, reduction="sum", targets=True):
    """(ours, the oracle) as functions of the differentiable arrays, and those arrays in ``dtype``.

    ``targets=False`` holds probability targets fixed: their gradient follows mlx.nn.losses (the
    logits taken relative to the row's maximum, held constant, the row of probabilities summing
    to 1), which neither the symbolic form written out nor differences across a change of the
    maximum follow (tests/test_probability_targets.py checks it).
    """
    held = [] if targets else [t.name for t in call.loss.class_targets]
    names = [n for n in call.differentiable if n not in held] + (["__weights"] if call.weights is not None else [])
    fixed = {k: v for k, v in call.mx_arrays().items() if k not in names}
    arrays = [mx.array(call.arrays[n] if n != "__weights" else call.weights, dtype=dtype) for n in names]

    def split(values):
        given = dict(zip(names, values))
        weights = given.pop("__weights", None)
        return {**fixed, **given}, weights

    def generated(*values):
        given, weights = split(values)
        extra = call.kwargs()
        if weights is not None:
            extra[call.loss.weights.name] = weights
        return ours(call.name)(**given, **extra, reduction=reduction)

    def symbolic(*values):
        given, weights = split(values)
        return oracle.reference(call.loss, given, call.params, oracle.MLX, call.axis, reduction, weights, call.flags)

    return generated, symbolic, arrays


def _directions(arrays, seed):
    rng = np.random.default_rng(seed)
    return [mx.array(rng.normal(size=a.shape), dtype=a.dtype) for a in arrays]


def _gradient(function, count):
    """The gradient in each of the first ``count`` arguments, as a list (mx.grad gives one array for one)."""
    grad = mx.grad(function, argnums=list(range(count)))
    return lambda *arrays: (lambda found: list(found) if isinstance(found, (list, tuple)) else [found])(grad(*arrays))


def _hvp_reverse_reverse(function, arrays, directions):
    grad = _gradient(function, len(arrays))
    along = lambda *a: sum(mx.sum(g * v) for g, v in zip(grad(*a), directions))
    return _gradient(along, len(arrays))(*arrays)


def _hvp_forward_reverse(function, arrays, directions):
    return mx.jvp(lambda *a: list(_gradient(function, len(arrays))(*a)), arrays, directions)[1]


def _hvp_reverse_forward(function, arrays, directions):
    along = lambda *a: mx.jvp(function, list(a), directions)[1][0]
    return _gradient(along, len(arrays))(*arrays)


def _close(got, want, what, rtol=2e-4):
    got, want = np.array(got, dtype=np.float64), np.array(want, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    assert np.all(np.isfinite(want)), f"{what}: the reference is not finite"
    assert np.allclose(got, want, rtol=rtol, atol=rtol * scale), f"{what}:\n{got}\nexpected\n{want}"


def check_hessian_vector_products(call):
    """Reverse over reverse, forward over reverse and reverse over forward: ours against the symbolic form's."""
    generated, symbolic, arrays = _functions(call, mx.float32, targets=False)
    directions = _directions(arrays, 1)
    for method in (_hvp_reverse_reverse, _hvp_forward_reverse, _hvp_reverse_forward):
        got, want = method(generated, arrays, directions), method(symbolic, arrays, directions)
        for index, (g, w) in enumerate(zip(got, want)):
            _close(g, w, f"{method.__name__}, argument {index}")


@pytest.mark.parametrize("name,flags,form", CASES)
def test_hessian_vector_products_equal_autodiff_of_the_symbolic_form(name, flags, form):
    check_hessian_vector_products(_call(name, flags, form))


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("name,flags,form", CASES)
def test_the_jvp_equals_autodiff_of_the_symbolic_form(name, flags, form, reduction):
    call = _call(name, flags, form)
    generated, symbolic, arrays = _functions(call, mx.float32, reduction, targets=False)
    directions = _directions(arrays, 2)
    (got,), (want,) = mx.jvp(generated, arrays, directions)[1], mx.jvp(symbolic, arrays, directions)[1]
    _close(got, want, "jvp")
    value, = mx.jvp(generated, arrays, directions)[0]
    _close(value, generated(*arrays), "the jvp's primal output")


@pytest.mark.parametrize("name,flags,form", CASES)
def test_hessian_vector_products_equal_differences_of_the_generated_gradient_in_float64(name, flags, form):
    call = _call(name, flags, form)
    generated, _, arrays = _functions(call, mx.float64, targets=False)
    directions = _directions(arrays, 3)
    grad = _gradient(generated, len(arrays))
    moved = lambda sign: grad(*[a + sign * STEP * v for a, v in zip(arrays, directions)])
    differences = [(up - down) / (2 * STEP) for up, down in zip(moved(1), moved(-1))]
    for method in (_hvp_reverse_reverse, _hvp_forward_reverse):
        for index, (g, w) in enumerate(zip(method(generated, arrays, directions), differences)):
            assert g.dtype == mx.float64
            _close(g, w, f"{method.__name__} against differences, argument {index}", rtol=1e-6)
