"""Row-wise losses are computed in shifted coordinates: a shared offset of the logits changes nothing.

For every row-wise loss, each input whose shared offset leaves the float64
truth unchanged (tests/oracle.py decides, not the generator) is moved by
offsets up to 1e20. The float32 logits ``z + c`` are rounded, so the truth is
taken at those logits less their row's maximum, computed exactly in float64
(the loss does not depend on it): the value and the gradient must stay within
float32 rounding of it.
Before the shift pass, ``logsumexp(z) - z_t`` lost the answer: cross entropy of
``[[1e8, 1e8]]`` was 0, not log 2.
"""

from __future__ import annotations

import zlib

import mlx.core as mx
import numpy as np
import pytest

from tests import oracle
from tests.arguments import LOSSES, make_call, ours, truth64, variants

OFFSETS = [1e4, 1e8, 1e12, 1e20]
PROBE = 3.7  # an offset small enough for float64 to tell whether the truth depends on it


def _invariant_inputs(loss):
    """The element inputs (with a call to probe them) whose shared offset does not change the truth."""
    found = []
    for flags, form in variants(loss):
        call = make_call(loss, np.random.default_rng(zlib.crc32(loss.name.encode())), shape=(3, 5), flags=flags, form=form)
        for name in call.differentiable:
            moved = call.with_arrays(**{name: call.arrays[name] + PROBE})
            with np.errstate(all="ignore"):
                same = np.allclose(truth64(moved), truth64(call), rtol=1e-12, atol=1e-12)
            if same and np.all(np.isfinite(truth64(call))):
                found.append(pytest.param(loss.name, flags, form, name, id=f"{loss.name}[{flags},{form}]-{name}"))
    return found


CASES = [case for loss in LOSSES.values() if loss.kind == "rowwise" for case in _invariant_inputs(loss)]


def _gradient64(call, name):
    """MLX's autodiff of the formula (tests/oracle.py) in float64."""
    arrays = {k: mx.array(v, dtype=mx.float64) if np.issubdtype(v.dtype, np.floating) else mx.array(v.astype(np.int32))
              for k, v in call.arrays.items()}

    def value(moved):
        return oracle.reference(call.loss, {**arrays, name: moved}, call.params, oracle.MLX, call.axis, "sum",
                                None, call.flags)

    return np.array(mx.grad(value)(arrays[name]), dtype=np.float64)


def _relative_error(got, want):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want)), initial=0.0))


def test_some_losses_are_shift_invariant():
    """The probe finds the softmax losses (so the test below is not vacuous)."""
    assert {case.values[0] for case in CASES} >= {"cross_entropy", "poly1_cross_entropy", "softmax_focal_loss"}


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("name,flags,form,input_name", CASES)
def test_a_shared_offset_changes_neither_value_nor_gradient(name, flags, form, input_name, offset):
    loss = LOSSES[name]
    call = make_call(loss, np.random.default_rng(zlib.crc32(f"{name}{offset}".encode())), shape=(4, 6), flags=flags,
                     form=form)
    moved32 = (call.arrays[input_name] + offset).astype(np.float32)
    moved = moved32.astype(np.float64)
    back = call.with_arrays(**{input_name: moved - np.max(moved, axis=call.axis, keepdims=True)})  # exact in float64
    arrays = {**call.mx_arrays(), input_name: mx.array(moved32)}
    function = lambda z: ours(name)(**{**arrays, input_name: z}, **call.kwargs(), reduction="sum")
    value, grad = mx.value_and_grad(function)(arrays[input_name])
    assert _relative_error(value, truth64(back, "sum")) < 1e-5
    assert _relative_error(grad, _gradient64(back, input_name)) < 1e-5


def test_equal_large_logits_give_log_2():
    logits, targets = mx.array([[1e8, 1e8]]), mx.array([0])
    assert abs(ours("cross_entropy")(logits, targets).item() - np.log(2)) < 1e-6


@pytest.mark.parametrize("offset", [1e4, 1e6, 1e8])
@pytest.mark.parametrize("label_smoothing,lse_square_scale", [(0.1, 0.0), (0.0, 1e-4), (0.2, 1e-4)])
def test_label_smoothing_and_z_loss_stay_accurate_at_an_offset(label_smoothing, lse_square_scale, offset):
    """The z-loss depends on the offset (logsumexp**2): it is compared with its float64 value, the rest with the truth."""
    rng = np.random.default_rng(zlib.crc32(f"{label_smoothing}{lse_square_scale}{offset}".encode()))
    logits = (rng.normal(size=(5, 7)) + offset).astype(np.float32)
    targets = rng.integers(0, 7, size=5)
    shifted = logits.astype(np.float64) - offset
    lse = np.log(np.sum(np.exp(shifted), axis=-1))  # of the shifted logits: no overflow, no cancellation
    truth = lse - (1 - label_smoothing) * shifted[np.arange(5), targets] - label_smoothing * shifted.mean(axis=-1)
    truth = truth + lse_square_scale * (offset + lse) ** 2
    got = ours("cross_entropy")(mx.array(logits), mx.array(targets), label_smoothing=label_smoothing,
                                lse_square_scale=lse_square_scale)
    assert _relative_error(got, truth) < 1e-5
