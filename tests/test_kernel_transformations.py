"""MLX's transformations of a loss on its kernel path (a GPU), the kernels run on the emulator.

A custom kernel has no jvp, vmap or vjp of its own: the kernel path's forward
and backward are custom functions whose jvp, vmap and (of the backward) vjp
are the loss's MLX bodies'. Every variant of every loss, on the Metal path:

* Hessian-vector products three ways and ``mx.jvp`` equal autodiff of the
  symbolic form (tests/oracle.py), as tests/test_second_order.py asks of the
  MLX path; the first-order gradient they start from is the kernels';
* ``mx.vmap`` of the loss and of its gradient (per-example gradients) equals
  the symbolic form item by item (on the MLX path too).
"""

from __future__ import annotations

import zlib

import mlx.core as mx
import numpy as np
import pytest

from generated import _gpu
from tests.arguments import LOSSES, make_call
from tests.metal_shim import harness
from tests.test_second_order import (
    BETWEEN_KINKS, CASES, _call, _close, _directions, _functions, _gradient, _hvp_reverse_reverse,
    check_hessian_vector_products,
)


@pytest.fixture
def metal(monkeypatch):
    kernels = harness.EmulatedKernels()
    monkeypatch.setattr(mx.fast, "metal_kernel", kernels.metal_kernel)
    monkeypatch.delenv("LOSSCC_BACKEND", raising=False)
    _gpu._built.clear()
    _gpu.set_backend("metal")
    yield kernels
    _gpu.set_backend(None)
    _gpu._built.clear()


@pytest.mark.parametrize("name,flags,form", CASES)
def test_second_order_and_the_jvp_on_the_kernel_path_equal_autodiff_of_the_symbolic_form(name, flags, form, metal):
    call = _call(name, flags, form)
    check_hessian_vector_products(call)
    generated, symbolic, arrays = _functions(call, mx.float32, targets=False)
    directions = _directions(arrays, 1)
    (got,), (want,) = mx.jvp(generated, arrays, directions)[1], mx.jvp(symbolic, arrays, directions)[1]
    _close(got, want, "jvp")
    kinds = {name for _, name, *_ in metal.launches}
    assert any("forward" in k for k in kinds) and any("backward" in k for k in kinds), "the kernels did not run"


@pytest.mark.parametrize("name,flags,form", CASES)
def test_vmap_on_the_kernel_path_equals_the_symbolic_form_item_by_item(name, flags, form, metal):
    _check_vmap(name, flags, form)


@pytest.mark.parametrize("name,flags,form", CASES)
def test_vmap_on_the_mlx_path_equals_the_symbolic_form_item_by_item(name, flags, form):
    _check_vmap(name, flags, form)


def _check_vmap(name, flags, form):
    first = _call(name, flags, form)
    rng = np.random.default_rng(zlib.crc32(f"vmap {name} {flags} {form}".encode()))
    second = BETWEEN_KINKS.get(name, lambda call: call)(make_call(LOSSES[name], rng, flags=flags, form=form, weights=True))
    generated, symbolic, arrays = _functions(first, mx.float32, targets=False)
    _, _, others = _functions(second, mx.float32, targets=False)  # the same held arrays, other differentiable ones
    batch = [mx.stack([a, b]) for a, b in zip(arrays, others)]
    items = [arrays, others]
    count = len(batch)
    _close(mx.vmap(generated)(*batch), mx.stack([symbolic(*item) for item in items]), "vmap of the loss")
    per_example = mx.vmap(_gradient(generated, count))(*batch)
    for index, grads in enumerate(zip(*[_gradient(symbolic, len(item))(*item) for item in items])):
        _close(per_example[index], mx.stack(grads), f"vmap of the gradient, argument {index}")

    # the transformations of the vmapped loss: MLX's default vmap of a custom function has no derivative
    weight = mx.array(rng.normal(size=2), dtype=mx.float32)  # a different cotangent for each item
    directions = _directions(batch, 2)
    grads = _gradient(lambda *b: mx.sum(mx.vmap(generated)(*b) * weight), count)(*batch)
    for index, want in enumerate(zip(*[_gradient(symbolic, count)(*item) for item in items])):
        _close(grads[index], mx.stack([w * weight[k] for k, w in enumerate(want)]), f"grad of vmap, argument {index}")
    (got,), = [mx.jvp(mx.vmap(generated), batch, directions)[1]]
    item_directions = [[d[k] for d in directions] for k in range(2)]
    want = mx.stack([mx.jvp(symbolic, item, along)[1][0] for item, along in zip(items, item_directions)])
    _close(got, want, "jvp of vmap")
    along = lambda *b: sum(mx.sum(g * d) for g, d in zip(mx.vmap(_gradient(generated, count))(*b), directions))
    want = [_hvp_reverse_reverse(symbolic, item, d) for item, d in zip(items, item_directions)]
    for index, got in enumerate(_gradient(along, count)(*batch)):
        _close(got, mx.stack([w[index] for w in want]), f"grad of vmap of grad, argument {index}")
