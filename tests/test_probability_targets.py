"""Probability targets are differentiated, never given a silent zero gradient.

cross_entropy's gradient by its probability targets is mlx.nn.losses' (the
logits relative to their row's maximum, as MLX takes them, so a shared
offset of the logits does not reach it); every loss with probability targets
has the gradient of its own value (float64 central differences of the
generated loss along random directions of the targets), and its jvp along
the targets is that gradient's. Second derivatives through the targets'
gradient hold the row's maximum constant, as MLX's autodiff of
mlx.nn.losses does.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn.losses as mlx_losses
import numpy as np
import pytest

import generated
from tests.arguments import LOSSES

PROBABILITY_LOSSES = [name for name, loss in LOSSES.items() if any(t.probabilities for t in loss.class_targets)]
RNG = np.random.default_rng(11)


def _probabilities(shape):
    p = RNG.uniform(0.05, 1.0, shape)
    return p / p.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_cross_entropy_target_gradient_is_mlx_nn_losses(label_smoothing, offset):
    logits = mx.array(RNG.normal(size=(6, 9)) + offset, dtype=mx.float32)
    targets = mx.array(_probabilities((6, 9)), dtype=mx.float32)
    cotangent = mx.array(RNG.normal(size=(6,)), dtype=mx.float32)

    def gradient(loss):
        return mx.vjp(lambda t: loss(logits, t, label_smoothing=label_smoothing, reduction="none"),
                      [targets], [cotangent])[1][0]

    ours, theirs = gradient(generated.cross_entropy), gradient(mlx_losses.cross_entropy)
    assert float(mx.abs(ours).max()) > 0.1  # not the zeros it was
    np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", PROBABILITY_LOSSES)
def test_target_gradient_is_the_derivative_of_the_loss(name):
    loss = LOSSES[name]
    function = getattr(generated, name)
    target = loss.class_targets[0].name
    logits = mx.array(RNG.normal(size=(5, 7)), dtype=mx.float64)
    targets = mx.array(_probabilities((5, 7)), dtype=mx.float64)
    direction = mx.array(RNG.normal(size=(5, 7)), dtype=mx.float64)

    def value(t):
        return function(logits, **{target: t}, reduction="sum")

    gradient = mx.grad(value)(targets)
    step = 1e-6
    difference = (value(targets + step * direction) - value(targets - step * direction)) / (2 * step)
    along = float(mx.sum(gradient * direction))
    assert abs(along - float(difference)) <= 1e-7 * (1 + abs(along)), (along, float(difference))
    assert float(mx.abs(gradient).max()) > 0.01
    (forward,) = mx.jvp(value, [targets], [direction])[1]  # forward mode along the targets agrees
    assert abs(float(forward) - along) <= 1e-9 * (1 + abs(along))
