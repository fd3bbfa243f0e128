"""The runtime's fast paths equal what they replace: reductions through partial results,
powers through cheaper operations, parameters passed as arrays (nothing compiled anew)."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn.losses as reference
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generated import _runtime as rt
from generated import huber_loss

EPS32 = float(np.finfo(np.float32).eps)

# Sizes around the layouts the reductions choose: below, at and past whole blocks of columns and lanes.
_SIZES = st.sampled_from([1, 3, 64, 255, 256, 257, 320, 1023, 1024, 4095, 4096, 4097, 5 * 1024 + 7, 12288])


def _summation_bound(values, chain):
    """Worst-case float32 error of a sum whose longest chain of additions is ``chain`` terms long."""
    return (chain + 1) * EPS32 * float(np.abs(values).astype(np.float64).sum())


def _chain(length, partials):
    """The longest chain of a sum of ``length`` terms laid out as ``partials`` columns (or not, when short)."""
    split = length % partials == 0 and length >= 4 * partials
    return length // partials + partials if split else length


@settings(max_examples=40, deadline=None)
@given(size=_SIZES, seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1.0, 1e-3, 1e20]))
def test_sum_and_mean_of_every_element_match_float64(size, seed, scale):
    values = (np.random.default_rng(seed).standard_normal(size) * scale).astype(np.float32)
    truth = values.astype(np.float64).sum()
    bulk = size - size % rt._COLUMNS
    bound = _summation_bound(values, _chain(bulk, rt._COLUMNS) + size - bulk if bulk >= 4 * rt._COLUMNS else size)
    assert abs(rt.sum_all(mx.array(values)).item() - truth) <= bound
    assert abs(rt.mean_all(mx.array(values)).item() - truth / size) <= bound / size


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 5), length=_SIZES, seed=st.integers(0, 2**31 - 1), last=st.booleans())
def test_row_reductions_match_float64(rows, length, seed, last):
    values = np.random.default_rng(seed).standard_normal((rows, length)).astype(np.float32)
    if not last:
        values = np.ascontiguousarray(values.T)  # the loss axis first
    axis = -1 if last else 0
    array = mx.array(values)
    truth = values.astype(np.float64)
    bound = _summation_bound(values, _chain(length, rt._LANES) if last else length)
    np.testing.assert_allclose(np.array(rt.row_sum(array, axis)), truth.sum(axis=axis, keepdims=True), rtol=0,
                               atol=bound)
    np.testing.assert_allclose(np.array(rt.row_mean(array, axis)), truth.mean(axis=axis, keepdims=True), rtol=0,
                               atol=bound / length)
    # a maximum is exact, whatever the order
    np.testing.assert_array_equal(np.array(rt.row_max(array, axis)), values.max(axis=axis, keepdims=True))


def test_row_maximum_propagates_nan():
    values = np.random.default_rng(0).standard_normal((3, 1024)).astype(np.float32)
    values[1, 517] = np.nan
    got = np.array(rt.row_max(mx.array(values), -1))[:, 0]
    assert np.isnan(got[1]) and not np.isnan(got[[0, 2]]).any()


def test_reductions_of_empty_arrays():
    assert rt.sum_all(mx.zeros((0, 3))).item() == 0
    assert math.isnan(rt.mean_all(mx.zeros((4, 0))).item())
    assert rt.row_sum(mx.zeros((3, 0)), -1).shape == (3, 1)
    assert math.isnan(rt.row_mean(mx.zeros((2, 0)), 1)[0, 0].item())


_BASES = np.array([0.0, -0.0, 1.0, -1.0, 2.5, -3.25, 1e-30, 1e30, 7e-45, np.inf, -np.inf, np.nan], np.float32)


@pytest.mark.parametrize("exponent", [1, 2, 0.5, -1, 3, 1.5, -2.5, 0])
def test_power_is_float32_rounding_of_the_true_power(exponent):
    got = np.array(rt.power(mx.array(_BASES), exponent)).astype(np.float64)
    with np.errstate(all="ignore"):
        truth = np.power(_BASES.astype(np.float64), exponent).astype(np.float32).astype(np.float64)
    # within one float32 rounding of the float64 power (rounded once more to float32), NaN where it is NaN
    np.testing.assert_allclose(got, truth, rtol=2 * EPS32, atol=0, equal_nan=True)


def _count_traces(monkeypatch):
    """Times a compiled body was traced: the Python body runs (and upcasts its inputs) only then."""
    traces = []
    upcast = rt.upcast
    monkeypatch.setattr(rt, "upcast", lambda array, dtype: traces.append(1) or upcast(array, dtype))
    return traces


@pytest.mark.parametrize("loss, parameter", [(huber_loss, "delta")])
def test_a_new_parameter_value_compiles_nothing_new(monkeypatch, loss, parameter):
    """Where only arithmetic reads a parameter (smooth_l1_loss's beta == 0 is a Python decision)."""
    rng = np.random.default_rng(7)
    x, y = (mx.array(rng.standard_normal((64, 33)).astype(np.float32)) for _ in range(2))
    mx.eval(loss(x, y, **{parameter: 0.5}))  # traced once per shape and dtype
    traces = _count_traces(monkeypatch)
    for value in (0.25, 0.75, 1.5):
        got = loss(x, y, **{parameter: value}, reduction="none")
        want = getattr(reference, loss.__name__)(x, y, **{parameter: value}, reduction="none")
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-6, atol=1e-7)
    assert not traces, "a new parameter value traced (and so compiled) the forward anew"


def test_a_class_block_cuts_per_class_arrays_and_refuses_row_reductions():
    block = rt.ClassBlock(1, 3, 2, 7)  # classes 3 and 4 of rows of 7
    weights = mx.arange(7).reshape(1, 7)
    assert block.cut(weights).tolist() == [[3, 4]]
    assert rt.row_length(mx.zeros((2, 2)), block) == 7
    assert rt.class_positions(mx.zeros((2, 2)), block).tolist() == [[3, 4]]
    with pytest.raises(rt.RowReduction):
        rt.row_sum(mx.zeros((2, 2)), block)
    assert rt.one_gradient_at_a_time(mx.zeros((2, 2)), block)
    assert rt.one_gradient_at_a_time(mx.zeros((2, 2)), rt.RowValues(1))
    assert not rt.one_gradient_at_a_time(mx.zeros((2, 2)), 1)
    assert rt.one_gradient_at_a_time(mx.zeros((2, 2), mx.bfloat16), 1)
