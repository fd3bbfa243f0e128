"""Losses computed in chunks (of rows, or of elements), and the backward that computes values again.

A row-wise forward hands the backward per-row values alone (for every dtype),
as does an elementwise one for half-precision inputs (nothing), and both run
on chunks (``rt.in_chunks``): the float32 values the size of the input are
then never whole. Both are forced here on small inputs (a chunk of a few
elements; an elementwise loss's recomputing backward for float32 inputs too),
and every loss, every variant, must give what the whole path gives (an
elementwise loss's holding its values), to float32 rounding; its second
order must equal autodiff of the symbolic form; ``mx.compile`` and
``mx.vmap`` must see the same.
"""

from __future__ import annotations

import importlib
import zlib

import mlx.core as mx
import numpy as np
import pytest

import generated
from generated import _runtime as rt
from tests.arguments import LOSSES, make_call, ours, variant_id, variants
from tests.test_second_order import _call as second_order_call
from tests.test_second_order import check_hessian_vector_products

CASES = [pytest.param(name, flags, form, id=f"{name}[{variant_id(flags, form)}]")
         for name, loss in LOSSES.items() for flags, form in variants(loss)]
# (shape, axis): chunks of 2, 2, 2 and 1 rows; chunks cut after the class axis; the class axis first.
# An elementwise loss is cut along its longest dimension (the axis is None).
SHAPES = [((7, 5), -1), ((3, 4, 5), 1), ((6, 5), 0)]
CHUNK_ELEMENTS = 10


@pytest.fixture
def in_chunks(monkeypatch):
    """Chunks of at most CHUNK_ELEMENTS elements, and the recomputing backward for every dtype (elementwise losses)."""
    monkeypatch.setattr(rt, "CHUNK_ELEMENTS", CHUNK_ELEMENTS)
    monkeypatch.setattr(rt, "holds_elements", lambda like: False)


def _call(name, flags, form, shape, axis):
    axis = axis if LOSSES[name].kind == "rowwise" else None
    rng = np.random.default_rng(zlib.crc32(f"chunks {name} {flags} {form} {shape}".encode()))
    return make_call(LOSSES[name], rng, shape, axis=axis, flags=flags, form=form, weights=True)


def _value_and_grads(call, dtype=mx.float32, compiled=False):
    names = call.differentiable
    arrays = call.mx_arrays(dtype)

    def loss(*values):
        return call.run(ours(call.name), "sum", dtype, dict(zip(names, values)))

    function = mx.value_and_grad(loss, argnums=list(range(len(names))))
    function = mx.compile(function) if compiled else function
    value, grads = function(*[arrays[n] for n in names])
    return [value, *grads]


def _close(got, want, what, dtype=mx.float32):
    got = np.asarray(got.astype(mx.float32), dtype=np.float64)
    want = np.asarray(want.astype(mx.float32), dtype=np.float64)
    assert got.shape == want.shape, what
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    tolerance = {mx.float32: 1e-5, mx.bfloat16: 2.0**-7}[dtype] * scale
    assert np.allclose(got, want, rtol=0, atol=tolerance, equal_nan=True), f"{what}:\n{got}\nexpected\n{want}"


@pytest.mark.parametrize("shape,axis", SHAPES, ids=["rows", "after-axis", "axis-first"])
@pytest.mark.parametrize("name,flags,form", CASES)
def test_chunks_and_recomputing_give_what_the_whole_path_gives(name, flags, form, shape, axis, monkeypatch):
    call = _call(name, flags, form, shape, axis)
    whole = {compiled: _value_and_grads(call, compiled=compiled) for compiled in (False, True)}
    monkeypatch.setattr(rt, "CHUNK_ELEMENTS", CHUNK_ELEMENTS)
    monkeypatch.setattr(rt, "holds_elements", lambda like: False)
    for compiled, want in whole.items():
        got = _value_and_grads(call, compiled=compiled)
        for index, (g, w) in enumerate(zip(got, want)):
            _close(g, w, f"compiled={compiled}, output {index}")


@pytest.mark.parametrize("name,flags,form", CASES)
def test_half_precision_chunks_give_what_one_chunk_gives(name, flags, form, monkeypatch):
    call = _call(name, flags, form, (7, 5), -1)
    whole = _value_and_grads(call, mx.bfloat16)
    monkeypatch.setattr(rt, "CHUNK_ELEMENTS", CHUNK_ELEMENTS)
    for index, (g, w) in enumerate(zip(_value_and_grads(call, mx.bfloat16), whole)):
        assert g.dtype == w.dtype
        _close(g, w, f"output {index}", mx.bfloat16)


@pytest.mark.parametrize("name,flags,form", CASES)
def test_recomputing_in_chunks_keeps_the_second_order_exact(name, flags, form, in_chunks):
    check_hessian_vector_products(second_order_call(name, flags, form))  # (3, 4): chunks of 2 and 1, or 3 and 1


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_vmap_over_chunks_equals_each_call(name, in_chunks):
    call = _call(name, {}, "indices", (7, 5), -1)
    arrays = call.mx_arrays()
    names = sorted(arrays)
    batch = [mx.stack([arrays[n], arrays[n] * 0.5 if mx.issubdtype(arrays[n].dtype, mx.floating) else arrays[n]])
             for n in names]
    mapped = mx.vmap(lambda *values: call.run(ours(name), "none", arrays=dict(zip(names, values))))(*batch)
    for index in range(2):
        one = call.run(ours(name), "none", arrays={n: b[index] for n, b in zip(names, batch)})
        _close(mapped[index], one, f"vmapped entry {index}")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_forwards_hand_the_backward_per_row_values_alone(name, monkeypatch):
    # The residual policy. What the forward returns besides the loss is held until the backward: a
    # row-wise loss's, one value per row for every dtype (cross_entropy's exp(logits - max) is computed
    # again); an elementwise loss's, nothing for half-precision inputs and what is dear to compute
    # again for float32 ones (poisson_nll_loss's exp(inputs)).
    forwards = []
    module = importlib.import_module(f"generated.{name}")

    def spied(forward):
        def spy(*arguments):
            outputs = forward(*arguments)
            forwards.append((arguments[0].size, outputs[1:]))
            return outputs
        return spy

    for variant, (forward, *backwards) in module._COMPILED.items():
        monkeypatch.setitem(module._COMPILED, variant, [spied(forward), *backwards])
    call = _call(name, {}, "indices", (6, 5), -1)
    held = {}
    for dtype in (mx.float32, mx.bfloat16, mx.float16):
        forwards.clear()
        _value_and_grads(call, dtype)
        size, residuals = forwards[0]  # the first program run is the forward
        held[dtype] = [r.shape for r in residuals if r is not None and r.size == size]
    assert held[mx.bfloat16] == held[mx.float16] == []
    if LOSSES[name].kind == "rowwise":
        assert held[mx.float32] == []
    if name == "poisson_nll_loss":
        assert held[mx.float32], "an elementwise loss's float32 inputs: the exponentials are held"


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name,flags,form", CASES)
def test_reduced_losses_summed_in_chunks_equal_the_whole_sum(name, flags, form, reduction, monkeypatch):
    # An elementwise loss's mean or sum without weights is summed chunk by chunk (rt.reduced_in_chunks).
    rng = np.random.default_rng(zlib.crc32(f"reduced {name} {flags} {form}".encode()))
    call = make_call(LOSSES[name], rng, (7, 5), flags=flags, form=form)
    for dtype in (mx.float32, mx.bfloat16):
        whole = call.run(ours(name), reduction, dtype)
        with monkeypatch.context() as patched:
            patched.setattr(rt, "CHUNK_ELEMENTS", CHUNK_ELEMENTS)
            chunked = call.run(ours(name), reduction, dtype)
        assert chunked.dtype == whole.dtype
        _close(chunked, whole, f"{dtype} {reduction}", dtype)
