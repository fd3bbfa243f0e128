"""float16 and bfloat16: MLX's result dtype, and no less accurate than mlx.nn.losses.

The generated code computes half-precision inputs in float32 and rounds once
at the end. So, against a float64 truth on the same (half-precision) inputs:
its error is at most one unit in the last place of the dtype (normwise), and
no worse than mlx.nn.losses' error on the same call plus half a unit (one
rounding), for values and for gradients. Inputs are drawn exactly
representable in both half formats, so one truth serves both dtypes.
"""

from __future__ import annotations

import zlib

import mlx.core as mx
import numpy as np
import pytest

from tests import oracle
from tests.arguments import (HALF, LOSSES, MLX_LOSSES, finite_differences, make_call, ours, theirs, truth64,
                             variant_id, variants)

UNIT = {mx.float16: 2.0**-10, mx.bfloat16: 2.0**-7}  # one ulp at 1.0


def _relative_error(actual, truth, keep=None):
    actual = np.asarray(actual.astype(mx.float32), dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    assert actual.shape == truth.shape
    if keep is not None:
        actual, truth = actual[keep], truth[keep]
    return float(np.max(np.abs(actual - truth), initial=0.0) / max(np.max(np.abs(truth), initial=0.0), 1e-30))


CASES = [pytest.param(name, flags, form, id=f"{name}-{variant_id(flags, form)}")
         for name, loss in LOSSES.items() for flags, form in variants(loss)]


def _target_gradient(call, arg):
    """The gradient by probability targets as mlx.nn.losses takes it (the logits relative to their
    row's maximum: tests/oracle.py), in float64, and no kinks."""
    arrays = call.mx_arrays(mx.float64)
    weights = None if call.weights is None else mx.array(call.weights, dtype=mx.float64)
    value = lambda t: oracle.reference(call.loss, {**arrays, arg: t}, call.params, oracle.MLX, call.axis, "sum",
                                       weights, call.flags)
    truth = np.asarray(mx.grad(value)(arrays[arg]), dtype=np.float64)
    return truth, np.zeros(truth.shape, dtype=bool)


@pytest.mark.parametrize("name,flags,form", CASES)
def test_half_precision_is_no_worse_than_mlx(name, flags, form):
    loss = LOSSES[name]
    targets = {t.name for t in loss.class_targets}
    rng = np.random.default_rng(zlib.crc32(f"{name}{flags}{form}".encode()))
    call = make_call(loss, rng, (3, 5), flags=flags, form=form, weights=True).rounded(mx.bfloat16)
    truths = {reduction: truth64(call, reduction) for reduction in ("none", "mean")}
    gradients = {arg: _target_gradient(call, arg) if arg in targets else finite_differences(call, arg)
                 for arg in call.differentiable}
    has_reference = name in MLX_LOSSES

    for dtype in HALF:
        for reduction, truth in truths.items():
            value = call.run(ours(name), reduction, dtype)
            expected_dtype = call.run(theirs(name), reduction, dtype).dtype if has_reference else dtype
            assert value.dtype == expected_dtype
            error = _relative_error(value, truth)
            assert error <= UNIT[dtype], f"{dtype} {reduction}: error {error:.2e} above one ulp"
            if has_reference:
                reference = _relative_error(call.run(theirs(name), reduction, dtype), truth)
                assert error <= reference + UNIT[dtype] / 2, f"{dtype} {reduction}: {error:.2e} vs MLX {reference:.2e}"

        arrays = call.mx_arrays(dtype)
        for arg, (truth, kink) in gradients.items():
            def gradient(function):
                objective = lambda x: call.run(function, "sum", dtype, {arg: x})
                return mx.grad(objective)(arrays[arg])

            grad = gradient(ours(name))
            assert grad.dtype == dtype
            error = _relative_error(grad, truth, ~kink)
            assert error <= UNIT[dtype], f"{dtype} d/d{arg}: error {error:.2e} above one ulp"
            if has_reference:
                reference = _relative_error(gradient(theirs(name)), truth, ~kink)
                assert error <= reference + UNIT[dtype] / 2, f"{dtype} d/d{arg}: {error:.2e} vs MLX {reference:.2e}"
