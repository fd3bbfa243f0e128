"""Class indices outside the row: their rows are NaN, every other row is as it was, nothing is read out of bounds.

Before, a target of -100 without ``ignore_index`` (or one past the last
class) gave a garbage loss and a backward that wrote outside the gradient
(a crash). Every loss with class-index targets, on the MLX path.
"""

from __future__ import annotations

import zlib

import mlx.core as mx
import numpy as np
import pytest

from tests.arguments import LOSSES, make_call, ours

NAMES = [name for name, loss in LOSSES.items() if loss.class_targets]
CLASSES = 5


@pytest.mark.parametrize("outside", [-1, -100, CLASSES, CLASSES + 7, 2**31 - 1])
@pytest.mark.parametrize("name", NAMES)
def test_a_row_with_a_class_outside_is_nan_and_the_others_are_unchanged(name, outside):
    loss = LOSSES[name]
    call = make_call(loss, np.random.default_rng(zlib.crc32(name.encode())), shape=(4, CLASSES), weights=True)
    target = loss.class_targets[0].name
    arrays = call.mx_arrays()
    bad = np.array(call.arrays[target]).astype(np.int32)
    bad[1] = outside
    bad[3] = outside
    rows = np.array([False, True, False, True])

    def run(targets, reduction="none"):
        function = lambda x: ours(name)(**{**arrays, target: targets, loss.inputs[0].name: x}, **call.kwargs(),
                                        reduction=reduction)
        return mx.value_and_grad(lambda x: mx.sum(function(x)))(arrays[loss.inputs[0].name]), function

    (_, grad), function = run(mx.array(bad))
    (_, good_grad), good_function = run(arrays[target])
    value, good = np.array(function(arrays[loss.inputs[0].name])), np.array(good_function(arrays[loss.inputs[0].name]))
    assert np.all(np.isnan(value[rows])) and np.array_equal(value[~rows], good[~rows])
    grad, good_grad = np.array(grad), np.array(good_grad)
    # a gradient that is 0 but at the target (nll_loss) holds its NaN where the row was computed; others are NaN
    assert np.all(np.any(np.isnan(grad[rows]), axis=-1)) and np.allclose(grad[~rows], good_grad[~rows], rtol=1e-6, atol=1e-7)
    assert np.isnan(ours(name)(**{**arrays, target: mx.array(bad)}, **call.kwargs(), reduction="mean").item())
