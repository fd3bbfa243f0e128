"""The catalogue's losses against torch.nn.functional: values and gradients, float32.

Every loss (or option) that PyTorch also has is run on fresh random shapes,
parameters and inputs, with every reduction, and compared with torch at a
relative 1e-5: the values, and the gradients of ``sum(cotangent * loss)``
for a random cotangent. Inputs are drawn away from kinks (hinges, ties,
clamps), where subgradient conventions may differ; those are tested
separately in test_new_losses_reference.py.

Where torch cannot be imported these tests skip, unless
``LOSSCC_REQUIRE_TORCH`` is set (as in CI), where they fail instead.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import mlx.core as mx
import numpy as np
import pytest

try:
    import torch
    import torch.nn.functional as F
except ImportError as error:  # pragma: no cover - depends on the machine
    if os.environ.get("LOSSCC_REQUIRE_TORCH"):
        raise ImportError(f"LOSSCC_REQUIRE_TORCH is set but torch is not importable: {error}") from error
    pytest.skip(
        f"torch is not importable ({error}); `make test` installs it with pip install -e '.[torch]'",
        allow_module_level=True,
    )

import generated as losscc

# torch warns that kl_div's 'mean' (over elements, the semantics compared here) will change some day
pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss:UserWarning")

REDUCTIONS = ("none", "mean", "sum")
SEEDS = range(4)  # the draw number also picks the options (flags, optional arrays): all are reached
RTOL = 1e-5


@contextmanager
def compiled_if(compiled):
    """The first draw runs the compiled functions users get; the others run uncompiled: compiled, each new
    parameter value is a new kernel to build (~0.5 s of C++ on CPU), and the math is the same."""
    if not compiled:
        mx.disable_compile()
    try:
        yield
    finally:
        mx.enable_compile()


# ---------------------------------------------------------------- random inputs

def uniform(rng, low, high, shape):
    return rng.uniform(low, high, shape).astype(np.float32)


def normal(rng, shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def signs(rng, shape):
    return rng.choice(np.array([-1.0, 1.0], dtype=np.float32), shape)


def away_from(values, kink, gap):
    """``values`` moved at least ``gap`` away from ``kink`` (keeping their side)."""
    distance = values - kink
    near = np.abs(distance) < gap
    return np.where(near, kink + np.where(distance >= 0, gap, -gap), values).astype(values.dtype)


def batch_shape(rng, ndim_choices=(1, 2, 3)):
    ndim = int(rng.choice(ndim_choices))
    return tuple(int(n) for n in rng.integers(1, 6, ndim))


def rows_and_classes(rng):
    return int(rng.integers(1, 9)), int(rng.integers(2, 9))


# ---------------------------------------------------------------- cases

class Case:
    """One comparison: arrays (numpy float32 / int64), the differentiable ones, and the two calls."""

    def __init__(self, arrays, differentiable, ours, theirs):
        self.arrays = arrays
        self.differentiable = differentiable
        self.ours = ours  # (dict of mx arrays, reduction) -> mx.array
        self.theirs = theirs  # (dict of torch tensors, reduction) -> torch.Tensor


def poisson_nll_loss(rng, variant):
    shape = batch_shape(rng)
    log_input, full = bool(variant & 1), bool(variant & 2)
    eps = float(rng.uniform(1e-8, 1e-2))
    inputs = normal(rng, shape) if log_input else uniform(rng, 0.2, 3.0, shape)
    # counts: 1 (Stirling term off) and > 1 (on); 0 too without full (torch's full-loss gradient at 0 is NaN)
    targets = (rng.poisson(2.0, shape) + int(full)).astype(np.float32)
    kwargs = dict(log_input=log_input, full=full, eps=eps)
    return Case(
        {"inputs": inputs, "targets": targets}, ["inputs", "targets"],
        lambda a, r: losscc.poisson_nll_loss(a["inputs"], a["targets"], reduction=r, **kwargs),
        lambda a, r: F.poisson_nll_loss(a["inputs"], a["targets"], reduction=r, **kwargs),
    )


def soft_margin_loss(rng, variant):
    shape = batch_shape(rng)
    inputs, targets = normal(rng, shape, 2.0), signs(rng, shape)
    return Case(
        {"inputs": inputs, "targets": targets}, ["inputs"],
        lambda a, r: losscc.soft_margin_loss(a["inputs"], a["targets"], reduction=r),
        lambda a, r: F.soft_margin_loss(a["inputs"], a["targets"], reduction=r),
    )


def hinge_embedding_loss(rng, variant):
    shape = batch_shape(rng)
    margin = float(rng.uniform(0.5, 2.0))
    inputs = away_from(uniform(rng, 0.0, 3.0, shape), margin, 0.05)
    targets = signs(rng, shape)
    return Case(
        {"inputs": inputs, "targets": targets}, ["inputs"],
        lambda a, r: losscc.hinge_embedding_loss(a["inputs"], a["targets"], margin=margin, reduction=r),
        lambda a, r: F.hinge_embedding_loss(a["inputs"], a["targets"], margin=margin, reduction=r),
    )


def cosine_embedding_loss(rng, variant):
    rows, dim = rows_and_classes(rng)
    margin = float(rng.uniform(-0.5, 0.5))
    x1, x2 = normal(rng, (rows, dim)), normal(rng, (rows, dim))
    cosine = np.sum(x1 * x2, -1) / np.sqrt(np.sum(x1 * x1, -1) * np.sum(x2 * x2, -1))
    x2[np.abs(cosine - margin) < 0.02] *= -1  # away from the hinge of dissimilar pairs
    targets = signs(rng, (rows,))
    return Case(
        {"x1": x1, "x2": x2, "targets": targets}, ["x1", "x2"],
        lambda a, r: losscc.cosine_embedding_loss(a["x1"], a["x2"], a["targets"], margin=margin, reduction=r),
        lambda a, r: F.cosine_embedding_loss(a["x1"], a["x2"], a["targets"], margin=margin, reduction=r),
    )


def multi_margin_loss(rng, variant):
    rows, classes = rows_and_classes(rng)
    p, margin = 1 + (variant & 1), float(rng.uniform(0.5, 1.5))
    inputs = normal(rng, (rows, classes))
    targets = rng.integers(0, classes, rows)
    hinge = margin - inputs[np.arange(rows), targets][:, None] + inputs
    inputs = inputs + np.where(np.abs(hinge) < 0.05, 0.1, 0.0).astype(np.float32)  # away from the hinges
    inputs[np.arange(rows), targets] = inputs[np.arange(rows), targets]  # the target's own score is not a hinge
    weight = uniform(rng, 0.2, 2.0, (classes,)) if variant & 2 else None
    arrays = {"inputs": inputs, "targets": targets} | ({"weight": weight} if weight is not None else {})
    return Case(
        arrays, ["inputs"],
        lambda a, r: losscc.multi_margin_loss(a["inputs"], a["targets"], weight=a.get("weight"), p=p, margin=margin,
                                              reduction=r),
        lambda a, r: F.multi_margin_loss(a["inputs"], a["targets"], p=p, margin=margin, weight=a.get("weight"),
                                         reduction=r),
    )


def multilabel_soft_margin_loss(rng, variant):
    rows, classes = rows_and_classes(rng)
    inputs = normal(rng, (rows, classes), 2.0)
    targets = rng.integers(0, 2, (rows, classes)).astype(np.float32)
    weight = uniform(rng, 0.2, 2.0, (classes,)) if variant & 1 else None
    arrays = {"inputs": inputs, "targets": targets} | ({"weight": weight} if weight is not None else {})
    return Case(
        arrays, ["inputs", "targets"],
        lambda a, r: losscc.multilabel_soft_margin_loss(a["inputs"], a["targets"], a.get("weight"), reduction=r),
        lambda a, r: F.multilabel_soft_margin_loss(a["inputs"], a["targets"], weight=a.get("weight"), reduction=r),
    )


def _pairwise_distance(a, b, p, eps):
    return np.sum(np.abs(a.astype(np.float64) - b + eps) ** p, -1) ** (1 / p)


def triplet_margin_loss(rng, variant):
    rows, dim = rows_and_classes(rng)
    margin, p = float(rng.uniform(0.1, 2.0)), [1.0, 1.5, 2.0, 3.0][variant % 4]
    eps, swap = float(rng.uniform(0.0, 1e-3)), bool(variant & 1)
    anchors, positives, negatives = (normal(rng, (rows, dim)) for _ in range(3))
    for _ in range(100):  # redraw rows near the hinge or (with swap) near a tie of the negative distances
        d_ap = _pairwise_distance(anchors, positives, p, eps)
        d_an, d_pn = _pairwise_distance(anchors, negatives, p, eps), _pairwise_distance(positives, negatives, p, eps)
        d_n = np.minimum(d_an, d_pn) if swap else d_an
        bad = (np.abs(d_ap - d_n + margin) < 0.02) | (swap & (np.abs(d_an - d_pn) < 0.02))
        if not bad.any():
            break
        negatives[bad] = normal(rng, (int(bad.sum()), dim))
    kwargs = dict(margin=margin, p=p, eps=eps, swap=swap)
    return Case(
        {"anchors": anchors, "positives": positives, "negatives": negatives}, ["anchors", "positives", "negatives"],
        lambda a, r: losscc.triplet_margin_loss(a["anchors"], a["positives"], a["negatives"], reduction=r, **kwargs),
        lambda a, r: F.triplet_margin_loss(a["anchors"], a["positives"], a["negatives"], reduction=r, **kwargs),
    )


def kl_div(rng, variant):
    rows, classes = rows_and_classes(rng)
    log_target = bool(variant & 1)
    inputs = torch.log_softmax(torch.tensor(normal(rng, (rows, classes))), -1).numpy()
    log_targets = torch.log_softmax(torch.tensor(normal(rng, (rows, classes), 2.0)), -1).numpy()
    targets = log_targets if log_target else np.exp(log_targets)
    return Case(
        {"inputs": inputs, "targets": targets}, ["inputs", "targets"],
        lambda a, r: losscc.kl_div(a["inputs"], a["targets"], log_target=log_target, reduction=r),
        lambda a, r: F.kl_div(a["inputs"], a["targets"], log_target=log_target, reduction=r),
    )


def binary_cross_entropy_with_logits(rng, variant):
    shape = batch_shape(rng)
    inputs, targets = normal(rng, shape, 3.0), rng.uniform(0, 1, shape).astype(np.float32)
    arrays = {"inputs": inputs, "targets": targets}
    if variant & 1:
        arrays["weight"] = uniform(rng, 0.2, 2.0, shape)
    if variant & 2:
        arrays["pos_weight"] = uniform(rng, 0.2, 3.0, shape[-1:])
    return Case(
        arrays, ["inputs", "targets"],  # torch does not differentiate weight
        lambda a, r: losscc.binary_cross_entropy_with_logits(
            a["inputs"], a["targets"], a.get("weight"), reduction=r, pos_weight=a.get("pos_weight")),
        lambda a, r: F.binary_cross_entropy_with_logits(
            a["inputs"], a["targets"], a.get("weight"), reduction=r, pos_weight=a.get("pos_weight")),
    )


def cross_entropy_ignore_index(rng, variant):
    """Class indices along axis 1 of (N, C, L) logits, label smoothing, rows ignored."""
    rows, classes = rows_and_classes(rng)
    length = int(rng.integers(1, 4))
    smoothing = 0.0 if variant & 1 else float(rng.uniform(0, 0.5))
    ignore_index = [-100, 0, classes - 1][variant % 3]
    logits = normal(rng, (rows, classes, length), 2.0)
    targets = rng.integers(0, classes, (rows, length))
    targets[rng.uniform(size=targets.shape) < 0.3] = ignore_index
    targets.flat[0] = (ignore_index + 1) % classes  # at least one row kept
    return Case(
        {"logits": logits, "targets": targets}, ["logits"],
        lambda a, r: losscc.cross_entropy(a["logits"], a["targets"], axis=1, label_smoothing=smoothing, reduction=r,
                                          ignore_index=ignore_index),
        lambda a, r: F.cross_entropy(a["logits"], a["targets"], label_smoothing=smoothing, reduction=r,
                                     ignore_index=ignore_index),
    )


def cross_entropy_probabilities(rng, variant):
    """Probability targets with label smoothing and MLX's per-row weights (torch: 'none' times weights)."""
    rows, classes = rows_and_classes(rng)
    smoothing = float(rng.uniform(0, 0.5))
    logits = normal(rng, (rows, classes), 2.0)
    targets = np.exp(normal(rng, (rows, classes)))
    targets /= targets.sum(-1, keepdims=True)
    weights = uniform(rng, 0.2, 2.0, (rows,))

    def theirs(a, r):
        loss = F.cross_entropy(a["logits"], a["targets"], label_smoothing=smoothing, reduction="none") * a["weights"]
        return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[r]

    return Case(
        {"logits": logits, "targets": targets, "weights": weights}, ["logits", "weights"],
        lambda a, r: losscc.cross_entropy(a["logits"], a["targets"], a["weights"], label_smoothing=smoothing,
                                          reduction=r),
        theirs,
    )


def nll_loss_ignore_index(rng, variant):
    rows, classes = rows_and_classes(rng)
    ignore_index = [-100, 0][variant & 1]
    inputs = torch.log_softmax(torch.tensor(normal(rng, (rows, classes))), -1).numpy()
    targets = rng.integers(0, classes, rows)
    targets[rng.uniform(size=rows) < 0.3] = ignore_index
    targets[0] = 1  # at least one row kept
    return Case(
        {"inputs": inputs, "targets": targets}, ["inputs"],
        lambda a, r: losscc.nll_loss(a["inputs"], a["targets"], reduction=r, ignore_index=ignore_index),
        lambda a, r: F.nll_loss(a["inputs"], a["targets"], reduction=r, ignore_index=ignore_index),
    )


def binary_cross_entropy_label_smoothing(rng, variant):
    """torch has no BCE label smoothing: its BCE on the smoothed targets is the reference."""
    shape = batch_shape(rng)
    with_logits, smoothing = bool(variant & 1), float(rng.uniform(0, 0.4))
    inputs = normal(rng, shape, 3.0) if with_logits else uniform(rng, 0.02, 0.98, shape)
    targets = rng.integers(0, 2, shape).astype(np.float32)
    torch_loss = F.binary_cross_entropy_with_logits if with_logits else F.binary_cross_entropy
    return Case(
        {"inputs": inputs, "targets": targets}, ["inputs", "targets"],
        lambda a, r: losscc.binary_cross_entropy(a["inputs"], a["targets"], with_logits=with_logits, reduction=r,
                                                 label_smoothing=smoothing),
        lambda a, r: torch_loss(a["inputs"], a["targets"] * (1 - smoothing) + smoothing / 2, reduction=r),
    )


CASES = [
    poisson_nll_loss, soft_margin_loss, hinge_embedding_loss, cosine_embedding_loss, multi_margin_loss,
    multilabel_soft_margin_loss, triplet_margin_loss, kl_div, binary_cross_entropy_with_logits,
    cross_entropy_ignore_index, cross_entropy_probabilities, nll_loss_ignore_index,
    binary_cross_entropy_label_smoothing,
]


# ---------------------------------------------------------------- comparison

def assert_close(ours, theirs, what):
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != torch's {theirs.shape}"
    assert np.all(np.isfinite(ours)), f"{what}: not finite: {ours}"
    # relative per element, with a floor relative to the array's scale for elements near 0
    scale = np.max(np.abs(theirs), initial=0.0)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=RTOL * scale, err_msg=what)


def _call_ours(case, reduction, replaced=None):
    arrays = {k: mx.array(v) for k, v in case.arrays.items()} | (replaced or {})
    return case.ours(arrays, reduction)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__)
def test_values_and_gradients_match_torch(make, seed):
    rng = np.random.default_rng([seed, CASES.index(make)])
    case = make(rng, seed)
    with compiled_if(seed == 0):
        compare_with_torch(case, rng, make.__name__)


def compare_with_torch(case, rng, name):
    for reduction in REDUCTIONS:
        tensors = {k: torch.tensor(v, requires_grad=k in case.differentiable) for k, v in case.arrays.items()}
        theirs = case.theirs(tensors, reduction)
        ours = _call_ours(case, reduction)
        assert ours.dtype == mx.float32
        assert_close(ours, theirs.detach().numpy(), f"{name} value, reduction={reduction}")

        cotangent = normal(rng, tuple(theirs.shape))
        theirs.backward(torch.tensor(cotangent))

        def objective(differentiable):
            return mx.sum(_call_ours(case, reduction, differentiable) * mx.array(cotangent))

        gradients = mx.grad(objective)({n: mx.array(case.arrays[n]) for n in case.differentiable})
        for array, gradient in gradients.items():
            assert_close(gradient, tensors[array].grad.numpy(), f"{name} d/d{array}, reduction={reduction}")
