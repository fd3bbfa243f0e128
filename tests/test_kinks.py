"""Gradients exactly at the kinks: one documented subgradient, MLX's where MLX has one.

Where mlx.nn.losses' autodiff is finite at the kink, the generated gradient
must equal it; where MLX gives NaN (0 * inf), the generated gradient must be
the finite subgradient the spec documents.
"""

import mlx.core as mx
import mlx.nn.losses as reference_losses
import numpy as np
import pytest

import generated
from tests.helpers import build_package


def _both(name, args, argnum, **kwargs):
    def grad_of(module):
        function = getattr(module, name)
        return mx.grad(lambda *a: mx.sum(function(*a, **kwargs)), argnums=argnum)(*args)

    return np.asarray(grad_of(generated)), np.asarray(grad_of(reference_losses))


A = mx.array
KINKS_SHARED_WITH_MLX = [
    # name, args, argnum, kwargs: every point is exactly at a kink
    ("huber_loss", (A([0.7, -0.7, 0.0, 0.3]), A([0.0, 0.0, 0.0, 0.3])), 0, {"delta": 0.7}),
    ("huber_loss", (A([0.7, -0.7, 0.0]), A([0.0, 0.0, 0.0])), 1, {"delta": 0.7}),
    ("smooth_l1_loss", (A([0.5, -0.5, 0.0]), A([0.0, 0.0, 0.0])), 0, {"beta": 0.5}),
    ("smooth_l1_loss", (A([0.5, -0.5, 0.0]), A([0.0, 0.0, 0.0])), 1, {"beta": 0.5}),
    ("l1_loss", (A([1.0, -2.0]), A([1.0, -2.0])), 0, {}),
    ("hinge_loss", (A([1.0, -1.0, 0.5]), A([1.0, -1.0, 2.0])), 0, {}),
    ("hinge_loss", (A([1.0, -1.0, 0.5]), A([1.0, -1.0, 2.0])), 1, {}),
    ("margin_ranking_loss", (A([1.0, 0.0]), A([1.0, 0.5]), A([1.0, -1.0])), 0, {"margin": 0.0}),
    ("margin_ranking_loss", (A([1.0, 0.0]), A([1.0, 0.5]), A([1.0, -1.0])), 1, {"margin": 0.0}),
    ("margin_ranking_loss", (A([1.0, 0.0]), A([1.0, 0.5]), A([1.0, -1.0])), 2, {"margin": 0.0}),
    ("gaussian_nll_loss", (A([0.0, 1.0]), A([1.0, 0.0]), A([1e-3, 1e-4])), 2, {"eps": 1e-3}),
    # positives == negatives with margin 0: the hinge argument is exactly 0
    ("triplet_loss", (A([[1.0, 2.0, 3.0]]), A([[0.0, 1.0, 1.0]]), A([[0.0, 1.0, 1.0]])), 0, {"margin": 0.0}),
    # anchors == positives: |a - p| = 0 inside the p-norm
    ("triplet_loss", (A([[1.0, 2.0]]), A([[1.0, 2.0]]), A([[0.0, 0.0]])), 0, {"p": 1, "margin": 5.0}),
    ("triplet_loss", (A([[1.0, 2.0]]), A([[1.0, 2.0]]), A([[0.0, 0.0]])), 0, {"p": 2, "margin": 5.0}),
]


@pytest.mark.parametrize("name,args,argnum,kwargs", KINKS_SHARED_WITH_MLX)
def test_kink_matches_mlx_autodiff(name, args, argnum, kwargs):
    ours, theirs = _both(name, args, argnum, **kwargs)
    assert np.all(np.isfinite(theirs)), "this point belongs in the other test"
    np.testing.assert_array_equal(ours, theirs)


def test_clipped_log_probability_has_zero_gradient():
    """BCE on probabilities 0 and 1: MLX's autodiff gives NaN; the clipped log's gradient is 0."""
    inputs, targets = A([0.0, 1.0]), A([1.0, 0.0])
    ours, theirs = _both("binary_cross_entropy", (inputs, targets), 0, with_logits=False)
    assert np.isnan(theirs).all()
    np.testing.assert_array_equal(ours, [0.0, 0.0])


def test_cosine_of_a_zero_vector_uses_eps_denominator():
    """||x1|| = 0: the denominator is eps, so d/dx1 = x2 / eps (MLX's autodiff gives NaN)."""
    x1, x2 = mx.zeros((2, 3)), A([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    ours, theirs = _both("cosine_similarity_loss", (x1, x2), 0, eps=1e-4)
    assert np.isnan(theirs).all()
    np.testing.assert_allclose(ours, np.asarray(x2) / 1e-4, rtol=1e-6)


ROW_MAX_SPEC = """
from generator.spec import Input, Loss, RowMax

scores = Input("scores")
spec = Loss("row_max", inputs=[scores], axis=-1, reduction="none", row=RowMax(scores))
"""


def test_row_max_splits_gradient_between_ties(tmp_path):
    """RowMax (used by no MLX loss) follows mx.max: tied maxima share the gradient equally."""
    package = build_package(tmp_path, {"row_max": ROW_MAX_SPEC})
    scores = A([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [5.0, 1.0, 0.0, 1.0]])
    ours = mx.grad(lambda s: mx.sum(package.row_max(s) * A([1.0, 2.0, 3.0])))(scores)
    theirs = mx.grad(lambda s: mx.sum(mx.max(s, axis=-1) * A([1.0, 2.0, 3.0])))(scores)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(package.row_max(scores)), [3.0, 2.0, 5.0])
