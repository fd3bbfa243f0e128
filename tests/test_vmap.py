"""``mx.vmap`` of the generated losses where the every-loss check (tests/test_kernel_transformations.py)
does not reach: a mean over the rows kept by ``ignore_index``, a parameter mapped with the arrays,
another axis, vmap of vmap, half precision.

Each is checked against the loss called item by item, whose gradients the other tests check against
autodiff of the symbolic form. MLX's own vmap of a custom function maps its forward alone: before
the losses had vmap rules, every gradient of a vmapped loss here was 0.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import generated
from tests.helpers import close_to_scale

BATCH, ROWS, CLASSES = 3, 4, 6


def _arrays(seed):
    rng = np.random.default_rng(seed)
    logits = mx.array(rng.normal(size=(BATCH, ROWS, CLASSES)).astype(np.float32))
    targets = rng.integers(0, CLASSES, size=(BATCH, ROWS))
    targets[0, :2] = targets[2, 1] = -100
    cotangent = mx.array(rng.normal(size=BATCH).astype(np.float32))
    return logits, mx.array(targets.astype(np.int32)), cotangent


def _item_by_item(loss, arrays, cotangent, argnums=(0,)):
    """The loss of each item, and the gradient of their sum weighted by ``cotangent``, item by item."""
    items = range(arrays[0].shape[0])
    values = mx.stack([loss(*(a[k] for a in arrays)) for k in items])
    total = lambda *a: sum(loss(*(x[k] for x in a)) * cotangent[k] for k in items)
    return values, _as_list(mx.grad(total, argnums=list(argnums))(*arrays))


def _vmapped(loss, arrays, cotangent, argnums=(0,), in_axes=0):
    values = mx.vmap(loss, in_axes=in_axes)(*arrays)
    total = lambda *a: mx.sum(mx.vmap(loss, in_axes=in_axes)(*a) * cotangent)
    return values, _as_list(mx.grad(total, argnums=list(argnums))(*arrays))


def _as_list(grads):  # (mx.grad gives one array for one argument)
    return list(grads) if isinstance(grads, (list, tuple)) else [grads]


def _same(got, want):
    for index, (g, w) in enumerate(zip([got[0], *got[1]], [want[0], *want[1]])):
        close_to_scale(g, w, "the losses" if index == 0 else f"gradient {index - 1}")


def test_a_mean_over_the_rows_kept_counts_each_items_own():
    logits, targets, cotangent = _arrays(1)
    loss = lambda x, t: generated.cross_entropy(x, t, reduction="mean", ignore_index=-100)
    _same(_vmapped(loss, [logits, targets], cotangent), _item_by_item(loss, [logits, targets], cotangent))


def test_a_parameter_mapped_with_the_arrays():
    # the parameter comes after the axis and the options: MLX 0.32's binding reads its axis wrong
    logits, targets, cotangent = _arrays(2)
    smoothing = mx.array([0.1, 0.3, 0.05])
    loss = lambda x, t, s: generated.cross_entropy(x, mx.maximum(t, 0), label_smoothing=s, reduction="sum")
    arrays = [logits, targets, smoothing]
    _same(_vmapped(loss, arrays, cotangent, (0, 2)), _item_by_item(loss, arrays, cotangent, (0, 2)))


def test_a_parameter_held_while_the_arrays_are_mapped():
    logits, targets, cotangent = _arrays(3)
    scale = mx.array(0.2)
    loss = lambda x, t, s: generated.cross_entropy(x, mx.maximum(t, 0), lse_square_scale=s, reduction="mean")
    got = _vmapped(loss, [logits, targets, scale], cotangent, (0, 2), in_axes=(0, 0, None))
    values, (of_logits, of_scale) = _item_by_item(lambda x, t: loss(x, t, scale), [logits, targets], cotangent)[0], \
        mx.grad(lambda x, s: sum(loss(x[k], mx.maximum(targets[k], 0), s) * cotangent[k] for k in range(BATCH)),
                argnums=[0, 1])(logits, scale)
    _same(got, (values, [of_logits, of_scale]))


def test_another_axis_mapped_and_another_reduced():
    rng = np.random.default_rng(4)
    z = mx.array(rng.normal(size=(CLASSES, BATCH, ROWS)).astype(np.float32))
    log_inputs = z - mx.logsumexp(z, axis=0, keepdims=True)
    targets = mx.softmax(mx.array(rng.normal(size=(CLASSES, BATCH, ROWS)).astype(np.float32)), axis=0)
    cotangent = mx.array(rng.normal(size=BATCH).astype(np.float32))
    loss = lambda x, t: generated.kl_div_loss(x, t, axis=0, reduction="mean")
    moved = [mx.moveaxis(log_inputs, 1, 0), mx.moveaxis(targets, 1, 0)]
    got = _vmapped(loss, [log_inputs, targets], cotangent, in_axes=1)
    want_values, (want_grad,) = _item_by_item(loss, moved, cotangent)
    _same(got, (want_values, [mx.moveaxis(want_grad, 0, 1)]))


def test_vmap_of_vmap():
    logits, targets, _ = _arrays(5)
    weights = mx.array(np.random.default_rng(5).normal(size=(BATCH, ROWS)).astype(np.float32))
    loss = lambda x, t: generated.cross_entropy(x, mx.maximum(t, 0))
    got = mx.grad(lambda x: mx.sum(mx.vmap(mx.vmap(loss))(x, targets) * weights))(logits)
    want = mx.grad(lambda x: mx.sum(loss(x, mx.maximum(targets, 0)) * weights))(logits)
    close_to_scale(got, want, "grad of vmap of vmap")
    # each item of each item reduced: two items of rows of 3 classes, their mean kept
    pairs, pair_targets = logits[:, :, :3].reshape(BATCH, 2, 2, 3), mx.maximum(targets, 0).reshape(BATCH, 2, 2) % 3
    mean = lambda x, t: generated.cross_entropy(x, t, reduction="mean", ignore_index=1)
    cotangent = weights[:, :2]
    got = mx.grad(lambda x: mx.sum(mx.vmap(mx.vmap(mean))(x, pair_targets) * cotangent))(pairs)
    want = mx.grad(lambda x: sum(mean(x[i, j], pair_targets[i, j]) * cotangent[i, j]
                                 for i in range(BATCH) for j in range(2)))(pairs)
    close_to_scale(got, want, "grad of vmap of vmap of a mean over the rows kept")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_half_precision_is_rounded_once_as_each_call_rounds_it(reduction):
    # each item's reduction of float32 losses, rounded once: the losses rounded to bfloat16 first, then
    # reduced, differ by an ulp in some items (2 of 64 here)
    rng = np.random.default_rng(6)
    logits = mx.array(3 * rng.normal(size=(64, 50, CLASSES)).astype(np.float32)).astype(mx.bfloat16)
    targets = mx.array(rng.integers(0, CLASSES, size=(64, 50)).astype(np.int32))
    cotangent = mx.array(rng.normal(size=64).astype(np.float32)).astype(mx.bfloat16)
    loss = lambda x, t: generated.cross_entropy(x, t, reduction=reduction)
    values, (grad,) = _vmapped(loss, [logits, targets], cotangent)
    want_values, (want_grad,) = _item_by_item(loss, [logits, targets], cotangent)
    assert values.dtype == grad.dtype == mx.bfloat16
    assert mx.array_equal(values, want_values) and mx.array_equal(grad, want_grad)


def test_a_parameter_mapped_over_empty_rows():
    # item by item: MLX's take of one item fails on an array with no elements; a slice does not
    logits, targets = mx.zeros((2, 0, CLASSES)), mx.zeros((2, 0), dtype=mx.int32)
    loss = lambda x, t, s: generated.cross_entropy(x, t, label_smoothing=s, reduction="sum")
    grads = mx.grad(lambda x, s: mx.vmap(loss)(x, targets, s).sum(), argnums=[0, 1])(logits, mx.array([0.1, 0.2]))
    assert mx.vmap(loss)(logits, targets, mx.array([0.1, 0.2])).tolist() == [0.0, 0.0]
    assert grads[0].shape == logits.shape and grads[1].tolist() == [0.0, 0.0]
