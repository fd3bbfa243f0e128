"""The catalogue's losses against float64 NumPy references written from the papers' formulas.

Each reference below is the loss as its paper (or the library that named it)
writes it, coded independently of the spec: no SymPy, no generated code.
For every new loss (and every new option of an MLX loss), on fresh random
shapes, parameters and inputs (away from kinks):

* float64: the values for every reduction match the reference to ~1e-10;
* float64: the gradients (of ``sum(cotangent * loss)`` for ``'none'``, of the
  loss for ``'mean'`` and ``'sum'``) match central finite differences of the
  reference;
* float32: the values are within 1e-5 (relative) of the float64 reference.

Kink conventions, numerical stability at extreme inputs and the new
options' edge cases (ignore_index, class weights) are tested after.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import generated as losscc
from generated import _runtime as rt

REDUCTIONS = ("none", "mean", "sum")
SEEDS = range(4)  # the draw number also picks the options (flags, optional arrays): all are reached




def _exp_error():
    """The relative error, on float64 arrays, of the exp the generated code evaluates (``rt.exp``)."""
    x = np.linspace(-30.0, 30.0, 6001)
    return float(np.max(np.abs(np.array(rt.exp(mx.array(x, dtype=mx.float64))) / np.exp(x) - 1)))


# float64 runs check each formula and its derivation (a wrong term is an O(1) error). Their accuracy is that
# of the exp the generated code evaluates: ~1e-16 where losscc computes it through pow (x86-64 Linux), but
# MLX's own exp, used elsewhere, is about float32-accurate on float64 arrays (2.5e-6 on [-30, 30], measured
# with MLX 0.32); cancellation (jensen_shannon_divergence's gradient) amplifies it up to tenfold.
FLOAT64_TOLERANCE = max(1e-10, 100 * _exp_error())
# central differences with a step of 1e-6 are good to about 1e-8 (relative)
FINITE_DIFFERENCE_TOLERANCE = max(1e-6, FLOAT64_TOLERANCE)
FLOAT32_TOLERANCE = 1e-5


# ---------------------------------------------------------------- numpy helpers (float64)

def log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def logsumexp(z, axis=-1):
    top = np.max(z, axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(z - top), axis=axis))


def log_softmax(z):
    return z - logsumexp(z)[..., None]


def at_class(values, classes):
    """values[..., classes] row by row (classes has values' shape without the last axis)."""
    return np.take_along_axis(values, classes[..., None], -1)[..., 0]


def away_from(values, kink, gap):
    distance = values - kink
    near = np.abs(distance) < gap
    return np.where(near, kink + np.where(distance >= 0, gap, -gap), values)


# ---------------------------------------------------------------- references (per element or per row, 'none')

def poisson_nll_reference(x, y, log_input, full, eps):
    # -log Poisson(y; rate) without log(y!) (or with Stirling's approximation of it for y > 1)
    loss = np.exp(x) - y * x if log_input else x - y * np.log(x + eps)
    if full:
        safe = np.where(y > 1, y, 2.0)
        loss = loss + np.where(y > 1, safe * np.log(safe) - safe + 0.5 * np.log(2 * np.pi * safe), 0.0)
    return loss


def soft_margin_reference(x, y):
    return np.log1p(np.exp(-y * x))


def hinge_embedding_reference(x, y, margin):
    return np.where(y == 1, x, np.maximum(0.0, margin - x))


def cosine_embedding_reference(x1, x2, y, margin):
    cos = np.sum(x1 * x2, -1) / np.sqrt((np.sum(x1**2, -1) + 1e-12) * (np.sum(x2**2, -1) + 1e-12))
    return np.where(y == 1, 1 - cos, np.maximum(0.0, cos - margin))


def multi_margin_reference(x, y, weight, p, margin):
    classes = x.shape[-1]
    hinge = np.maximum(0.0, margin - at_class(x, y)[..., None] + x) ** p
    others = np.arange(classes) != y[..., None]
    w = np.ones(classes) if weight is None else weight
    return w[y] * np.sum(np.where(others, hinge, 0.0), -1) / classes


def multiclass_hinge_reference(scores, labels):
    # optax.losses.multiclass_hinge_loss: max_i(scores_i + 1 - [i == y]) - scores_y
    one_hot = np.arange(scores.shape[-1]) == labels[..., None]
    return np.max(scores + 1.0 - one_hot, -1) - at_class(scores, labels)


def multiclass_perceptron_reference(scores, labels):
    return np.max(scores, -1) - at_class(scores, labels)


def generalized_kl_reference(log_predictions, targets):
    # optax.losses.generalized_kl_divergence: sum(xlogy(t, t) - t * log_p + exp(log_p) - t)
    xlogx = np.where(targets > 0, targets * np.log(np.where(targets > 0, targets, 1.0)), 0.0)
    return np.sum(xlogx - targets * log_predictions + np.exp(log_predictions) - targets, -1)


def ranking_softmax_reference(logits, labels):
    # optax.losses.ranking_softmax_loss (per list): -sum(labels * log_softmax(logits))
    return -np.sum(labels * log_softmax(logits), -1)


def multilabel_soft_margin_reference(x, y, weight):
    w = 1.0 if weight is None else weight
    return -np.mean(w * (y * log_sigmoid(x) + (1 - y) * log_sigmoid(-x)), -1)


def triplet_margin_reference(a, p_, n, margin, p, eps, swap):
    def distance(u, v):
        return np.sum(np.abs(u - v + eps) ** p, -1) ** (1 / p)

    d_negative = distance(a, n)
    if swap:
        d_negative = np.minimum(d_negative, distance(p_, n))
    return np.maximum(distance(a, p_) - d_negative + margin, 0.0)


def kl_div_reference(x, t, log_target):
    if log_target:
        return np.exp(t) * (t - x)
    return np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0) - t * x


def bce_with_logits_reference(x, y, weight, pos_weight):
    pw = 1.0 if pos_weight is None else pos_weight
    loss = -(pw * y * log_sigmoid(x) + (1 - y) * log_sigmoid(-x))
    return loss if weight is None else loss * weight


def sigmoid_focal_reference(x, y, alpha, gamma):
    # Lin et al. 2017: FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), p_t = p if y == 1 else 1 - p
    p = 1 / (1 + np.exp(-x))
    p_t = np.where(y == 1, p, 1 - p)
    alpha_t = np.where(y == 1, alpha, 1 - alpha) if alpha >= 0 else 1.0
    return -alpha_t * (1 - p_t) ** gamma * np.log(p_t)


def softmax_focal_reference(z, t, alpha, gamma):
    p_t = np.exp(at_class(log_softmax(z), t))
    a = 1.0 if alpha is None else alpha[t]
    return -a * (1 - p_t) ** gamma * np.log(p_t)


def poly1_reference(z, t, epsilon, weights):
    # Leng et al. 2022: L_Poly-1 = CE + epsilon (1 - P_t); with label distributions as optax: sum_j t_j (1 - P_j)
    labels = np.eye(z.shape[-1])[t] if t.dtype.kind == "i" else t
    probabilities = np.exp(log_softmax(z))
    loss = -np.sum(labels * log_softmax(z), -1) + epsilon * np.sum(labels * (1 - probabilities), -1)
    return loss if weights is None else loss * weights


def jensen_shannon_reference(log_q, log_p, beta):
    p, q = np.exp(log_p), np.exp(log_q)
    m = beta * p + (1 - beta) * q
    return beta * np.sum(p * np.log(p / m), -1) + (1 - beta) * np.sum(q * np.log(q / m), -1)


def dice_reference(p, y, smooth):
    return 1 - (2 * np.sum(p * y, -1) + smooth) / (np.sum(p, -1) + np.sum(y, -1) + smooth)


def tversky_reference(p, y, alpha, beta, smooth):
    tp, fp, fn = np.sum(p * y, -1), np.sum(p * (1 - y), -1), np.sum((1 - p) * y, -1)
    return 1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def pinball_reference(x, y, tau):
    d = y - x
    return np.where(d >= 0, tau * d, (tau - 1) * d)


def expectile_reference(x, y, tau):
    d = y - x
    return np.abs(tau - (d < 0)) * d**2


def pseudo_huber_reference(x, y, delta):
    return delta**2 * (np.sqrt(1 + ((x - y) / delta) ** 2) - 1)


def charbonnier_reference(x, y, eps):
    return np.sqrt((x - y) ** 2 + eps**2)


def tweedie_reference(mu, y, power):
    # unit deviance 2 (y^(2-p) / ((1-p)(2-p)) - y mu^(1-p) / (1-p) + mu^(2-p) / (2-p)), 1 < p < 2
    return 2 * (y ** (2 - power) / ((1 - power) * (2 - power)) - y * mu ** (1 - power) / (1 - power)
                + mu ** (2 - power) / (2 - power))


def squared_hinge_reference(x, y):
    return np.maximum(0.0, 1 - x * y) ** 2


def cross_entropy_reference(z, t, smoothing, lse_square_scale):
    lse = logsumexp(z)
    return lse - (1 - smoothing) * at_class(z, t) - smoothing * np.mean(z, -1) + lse_square_scale * lse**2


def bce_label_smoothing_reference(x, y, with_logits, smoothing):
    y = y * (1 - smoothing) + smoothing / 2
    if with_logits:
        return -(y * log_sigmoid(x) + (1 - y) * log_sigmoid(-x))
    return -(y * np.log(x) + (1 - y) * np.log(1 - x))


# ---------------------------------------------------------------- cases

class Case:
    """Arrays (float64 numpy, int64 for classes), the differentiable ones, our call and the reference.

    ``reference`` gets the arrays with the loss axis moved last and returns the
    unreduced loss; ``kept`` (optional) marks the elements ``'mean'`` counts.
    """

    def __init__(self, arrays, differentiable, ours, reference, axis=None, kept=None, terms=None):
        self.arrays, self.differentiable = arrays, differentiable
        self.ours, self.reference, self.axis, self.kept = ours, reference, axis, kept
        # for a loss that is a sum of large terms that cancel: the terms' magnitude, per element ('none'),
        # so the float32 check asks for rounding errors relative to the terms, not to their small sum
        self.terms = terms

    def expected(self, arrays, reduction):
        if self.axis is not None:
            arrays = {k: np.moveaxis(v, self.axis, -1) if v.ndim == self.arrays_ndim(k) else v
                      for k, v in arrays.items()}
        loss = self.reference(arrays)
        if reduction == "none":
            return loss
        if reduction == "sum":
            return np.sum(loss)
        return np.sum(loss) / (loss.size if self.kept is None else np.sum(self.kept))

    def arrays_ndim(self, name):
        """Arrays that extend along the loss axis have the first array's number of dimensions."""
        return self.arrays[next(iter(self.arrays))].ndim


def cross_entropy_terms(logits, targets, weights=None):
    """|logsumexp| + |target logit| of each row: cross entropy is their difference, which cancels when p_t ~ 1."""
    target = at_class(logits, targets) if targets.dtype.kind == "i" else np.sum(targets * logits, -1)
    magnitude = np.abs(logsumexp(logits)) + np.abs(target)
    return magnitude if weights is None else magnitude * np.abs(weights)


def shape_with_axis(rng, length=None):
    ndim = int(rng.integers(1, 4))
    shape = [int(n) for n in rng.integers(1, 5, ndim)]
    axis = int(rng.integers(-ndim, ndim))
    shape[axis] = int(rng.integers(2, 7)) if length is None else length
    return tuple(shape), axis


def elementwise_shape(rng):
    return tuple(int(n) for n in rng.integers(1, 5, int(rng.integers(1, 4))))


def drop(shape, axis):
    return tuple(n for i, n in enumerate(shape) if i != axis % len(shape))


def poisson_nll_loss(rng, variant):
    shape = elementwise_shape(rng)
    log_input, full, eps = bool(variant & 1), bool(variant & 2), float(rng.uniform(1e-8, 1e-2))
    x = rng.normal(size=shape) if log_input else rng.uniform(0.2, 3.0, shape)
    y = away_from(rng.uniform(0.0, 5.0, shape), 1.0, 0.05)  # the Stirling term switches on at y = 1
    return Case({"inputs": x, "targets": y}, ["inputs", "targets"],
                lambda a, r: losscc.poisson_nll_loss(a["inputs"], a["targets"], log_input, full, eps, reduction=r),
                lambda a: poisson_nll_reference(a["inputs"], a["targets"], log_input, full, eps))


def soft_margin_loss(rng, variant):
    shape = elementwise_shape(rng)
    x, y = rng.normal(0, 2, shape), rng.choice([-1.0, 1.0], shape)
    return Case({"inputs": x, "targets": y}, ["inputs"],
                lambda a, r: losscc.soft_margin_loss(a["inputs"], a["targets"], reduction=r),
                lambda a: soft_margin_reference(a["inputs"], a["targets"]))


def hinge_embedding_loss(rng, variant):
    shape, margin = elementwise_shape(rng), float(rng.uniform(0.5, 2.0))
    x, y = away_from(rng.uniform(0, 3, shape), margin, 0.05), rng.choice([-1.0, 1.0], shape)
    return Case({"inputs": x, "targets": y}, ["inputs"],
                lambda a, r: losscc.hinge_embedding_loss(a["inputs"], a["targets"], margin, reduction=r),
                lambda a: hinge_embedding_reference(a["inputs"], a["targets"], margin))


def cosine_embedding_loss(rng, variant):
    shape, axis = shape_with_axis(rng)
    margin = float(rng.uniform(-0.5, 0.5))
    x1, x2 = rng.normal(size=shape), rng.normal(size=shape)
    cos = np.sum(x1 * x2, axis) / np.sqrt(np.sum(x1**2, axis) * np.sum(x2**2, axis))
    x2 = np.where(np.expand_dims(np.abs(cos - margin) < 0.02, axis), -x2, x2)  # away from the hinge
    y = rng.choice([-1.0, 1.0], drop(shape, axis))
    return Case({"x1": x1, "x2": x2, "targets": y}, ["x1", "x2"],
                lambda a, r: losscc.cosine_embedding_loss(a["x1"], a["x2"], a["targets"], axis, margin, reduction=r),
                lambda a: cosine_embedding_reference(a["x1"], a["x2"], a["targets"], margin), axis)


def multi_margin_loss(rng, variant):
    shape, axis = shape_with_axis(rng)
    p, margin = 1 + (variant & 1), float(rng.uniform(0.5, 1.5))
    x = rng.normal(size=shape)
    t = rng.integers(0, shape[axis], drop(shape, axis))
    hinge = margin - np.expand_dims(at_class(np.moveaxis(x, axis, -1), t), axis) + x
    x = x + np.where(np.abs(hinge) < 0.05, 0.1, 0.0)  # away from the hinges (the target's own term is masked)
    arrays = {"inputs": x, "targets": t}
    if variant & 2:
        arrays["weight"] = rng.uniform(0.2, 2.0, shape[axis])
    return Case(arrays, ["inputs"],
                lambda a, r: losscc.multi_margin_loss(a["inputs"], a["targets"], a.get("weight"), axis, p, margin,
                                                      reduction=r),
                lambda a: multi_margin_reference(a["inputs"], a["targets"], a.get("weight"), p, margin), axis)


def _scores_away_from_ties(rng, shape, axis, margin):
    """Scores whose row maximum (of scores + margin off the label) is one class's, by at least 0.1."""
    while True:
        x = rng.normal(size=shape)
        t = rng.integers(0, shape[axis], drop(shape, axis))
        moved = np.moveaxis(x, axis, -1) + margin * (np.arange(shape[axis]) != t[..., None])
        top = np.sort(moved, -1)
        if shape[axis] < 2 or np.all(top[..., -1] - top[..., -2] > 0.1):
            return x, t


def _scores_and_labels(rng, loss, margin, reference):
    """A Case of an optax loss of class scores and labels, its maximum (of the scores, plus ``margin`` off
    the label) one class's."""
    shape, axis = shape_with_axis(rng)
    x, t = _scores_away_from_ties(rng, shape, axis, margin)
    return Case({"scores": x, "labels": t}, ["scores"],
                lambda a, r: loss(a["scores"], a["labels"], axis, reduction=r),
                lambda a: reference(a["scores"], a["labels"]), axis)


def multiclass_hinge_loss(rng, variant):
    return _scores_and_labels(rng, losscc.multiclass_hinge_loss, 1.0, multiclass_hinge_reference)


def multiclass_perceptron_loss(rng, variant):
    return _scores_and_labels(rng, losscc.multiclass_perceptron_loss, 0.0, multiclass_perceptron_reference)


def generalized_kl_divergence(rng, variant):
    shape, axis = shape_with_axis(rng)
    log_predictions = rng.normal(size=shape)  # any measure: a row need not sum to 1
    targets = rng.uniform(0.05, 2.0, shape)
    return Case({"log_predictions": log_predictions, "targets": targets}, ["log_predictions", "targets"],
                lambda a, r: losscc.generalized_kl_divergence(a["log_predictions"], a["targets"], axis, reduction=r),
                lambda a: generalized_kl_reference(a["log_predictions"], a["targets"]), axis)


def ranking_softmax_loss(rng, variant):
    shape, axis = shape_with_axis(rng)
    logits = rng.normal(size=shape) * 3.0
    labels = rng.integers(0, 4, shape).astype(np.float64)  # graded relevance, many lists with several 0s
    return Case({"logits": logits, "labels": labels}, ["logits"],
                lambda a, r: losscc.ranking_softmax_loss(a["logits"], a["labels"], axis, reduction=r),
                lambda a: ranking_softmax_reference(a["logits"], a["labels"]), axis)


def multilabel_soft_margin_loss(rng, variant):
    shape, axis = shape_with_axis(rng)
    arrays = {"inputs": rng.normal(0, 2, shape), "targets": rng.uniform(0, 1, shape)}
    if variant & 1:
        arrays["weight"] = rng.uniform(0.2, 2.0, shape[axis])
    return Case(arrays, ["inputs", "targets"],
                lambda a, r: losscc.multilabel_soft_margin_loss(a["inputs"], a["targets"], a.get("weight"), axis,
                                                                reduction=r),
                lambda a: multilabel_soft_margin_reference(a["inputs"], a["targets"], a.get("weight")), axis)


def triplet_margin_loss(rng, variant):
    shape, axis = shape_with_axis(rng)
    margin, p = float(rng.uniform(0.1, 2.0)), [1.0, 1.5, 2.0, 3.0][variant % 4]
    eps, swap = float(rng.uniform(0, 1e-3)), bool(variant & 1)
    a, pos, neg = (rng.normal(size=shape) for _ in range(3))
    last = lambda v: np.moveaxis(v, axis, -1)
    for _ in range(100):  # redraw near the hinge or a tie of the two negative distances
        d = lambda u, v: np.sum(np.abs(last(u) - last(v) + eps) ** p, -1) ** (1 / p)
        d_n = np.minimum(d(a, neg), d(pos, neg)) if swap else d(a, neg)
        bad = (np.abs(d(a, pos) - d_n + margin) < 0.02) | (swap & (np.abs(d(a, neg) - d(pos, neg)) < 0.02))
        if not bad.any():
            break
        neg = np.where(np.expand_dims(bad, axis), rng.normal(size=shape), neg)
    return Case({"anchors": a, "positives": pos, "negatives": neg}, ["anchors", "positives", "negatives"],
                lambda v, r: losscc.triplet_margin_loss(v["anchors"], v["positives"], v["negatives"], axis, margin, p,
                                                        eps, swap, reduction=r),
                lambda v: triplet_margin_reference(v["anchors"], v["positives"], v["negatives"], margin, p, eps, swap),
                axis)


def kl_div(rng, variant):
    shape, log_target = elementwise_shape(rng), bool(variant & 1)
    x = np.log(rng.uniform(0.05, 1, shape))
    t = np.log(rng.uniform(0.05, 1, shape)) if log_target else rng.uniform(0.05, 1, shape)
    return Case({"inputs": x, "targets": t}, ["inputs", "targets"],
                lambda a, r: losscc.kl_div(a["inputs"], a["targets"], log_target, reduction=r),
                lambda a: kl_div_reference(a["inputs"], a["targets"], log_target))


def binary_cross_entropy_with_logits(rng, variant):
    shape = elementwise_shape(rng)
    arrays = {"inputs": rng.normal(0, 3, shape), "targets": rng.uniform(0, 1, shape)}
    differentiable = ["inputs", "targets"]
    if variant & 1:
        arrays["weight"] = rng.uniform(0.2, 2, shape)
        differentiable.append("weight")
    if variant & 2:
        arrays["pos_weight"] = rng.uniform(0.2, 3, shape[-1])
    return Case(arrays, differentiable,
                lambda a, r: losscc.binary_cross_entropy_with_logits(
                    a["inputs"], a["targets"], a.get("weight"), reduction=r, pos_weight=a.get("pos_weight")),
                lambda a: bce_with_logits_reference(a["inputs"], a["targets"], a.get("weight"), a.get("pos_weight")))


def sigmoid_focal_loss(rng, variant):
    shape = elementwise_shape(rng)
    alpha = -1.0 if variant & 1 else float(rng.uniform(0, 1))  # a negative alpha: no class weighting
    gamma = [0.0, 0.5, 2.0, float(rng.uniform(0, 5))][variant % 4]
    x, y = rng.normal(0, 3, shape), rng.integers(0, 2, shape).astype(np.float64)
    return Case({"inputs": x, "targets": y}, ["inputs"],
                lambda a, r: losscc.sigmoid_focal_loss(a["inputs"], a["targets"], alpha, gamma, reduction=r),
                lambda a: sigmoid_focal_reference(a["inputs"], a["targets"], alpha, gamma))


def softmax_focal_loss(rng, variant):
    shape, axis = shape_with_axis(rng)
    gamma = [0.0, 0.5, 2.0, float(rng.uniform(0, 5))][variant % 4]
    arrays = {"logits": rng.normal(0, 2, shape), "targets": rng.integers(0, shape[axis], drop(shape, axis))}
    if variant & 1:
        arrays["alpha"] = rng.uniform(0.2, 1, shape[axis])
    return Case(arrays, ["logits"],
                lambda a, r: losscc.softmax_focal_loss(a["logits"], a["targets"], a.get("alpha"), axis, gamma,
                                                       reduction=r),
                lambda a: softmax_focal_reference(a["logits"], a["targets"], a.get("alpha"), gamma), axis)


def poly1_cross_entropy(rng, variant):
    shape, axis = shape_with_axis(rng)
    epsilon = float(rng.uniform(-1, 4))
    z = rng.normal(0, 2, shape)
    if variant & 1:
        t = rng.integers(0, shape[axis], drop(shape, axis))
    else:
        t = np.exp(rng.normal(size=shape))
        t /= t.sum(axis, keepdims=True)
    arrays = {"logits": z, "targets": t}
    if variant & 2:
        arrays["weights"] = rng.uniform(0.2, 2, drop(shape, axis))
    return Case(arrays, ["logits"] + (["weights"] if "weights" in arrays else []),
                lambda a, r: losscc.poly1_cross_entropy(a["logits"], a["targets"], a.get("weights"), axis, epsilon,
                                                        reduction=r),
                lambda a: poly1_reference(a["logits"], a["targets"], epsilon, a.get("weights")), axis,
                terms=lambda a: cross_entropy_terms(np.moveaxis(a["logits"], axis, -1), a["targets"], a.get("weights")))


def jensen_shannon_divergence(rng, variant):
    shape, axis = shape_with_axis(rng)
    beta = float(rng.uniform(0.05, 0.95))
    log_q, log_p = np.log(rng.uniform(0.01, 1, shape)), np.log(rng.uniform(0.01, 1, shape))
    return Case({"inputs": log_q, "targets": log_p}, ["inputs", "targets"],
                lambda a, r: losscc.jensen_shannon_divergence(a["inputs"], a["targets"], axis, beta, reduction=r),
                lambda a: jensen_shannon_reference(a["inputs"], a["targets"], beta), axis)


def binary_dice_loss(rng, variant):
    shape, axis = shape_with_axis(rng)
    smooth = 0.0 if variant & 1 else float(rng.uniform(0, 2))
    p, y = rng.uniform(0.01, 1, shape), rng.integers(0, 2, shape).astype(np.float64)
    return Case({"inputs": p, "targets": y}, ["inputs", "targets"],
                lambda a, r: losscc.binary_dice_loss(a["inputs"], a["targets"], axis, smooth, reduction=r),
                lambda a: dice_reference(a["inputs"], a["targets"], smooth), axis)


def tversky_loss(rng, variant):
    shape, axis = shape_with_axis(rng)
    alpha, beta, smooth = (float(v) for v in rng.uniform(0, 2, 3))
    p, y = rng.uniform(0.01, 1, shape), rng.uniform(0, 1, shape)
    return Case({"inputs": p, "targets": y}, ["inputs", "targets"],
                lambda a, r: losscc.tversky_loss(a["inputs"], a["targets"], axis, alpha, beta, smooth, reduction=r),
                lambda a: tversky_reference(a["inputs"], a["targets"], alpha, beta, smooth), axis)


def pinball_loss(rng, variant):
    shape, tau = elementwise_shape(rng), float(rng.uniform(0, 1))
    x = rng.normal(size=shape)
    y = away_from(rng.normal(size=shape) - x, 0.0, 0.05) + x
    return Case({"inputs": x, "targets": y}, ["inputs", "targets"],
                lambda a, r: losscc.pinball_loss(a["inputs"], a["targets"], tau, reduction=r),
                lambda a: pinball_reference(a["inputs"], a["targets"], tau))


def expectile_loss(rng, variant):
    shape, tau = elementwise_shape(rng), float(rng.uniform(0, 1))
    x, y = rng.normal(size=shape), rng.normal(size=shape)
    return Case({"inputs": x, "targets": y}, ["inputs", "targets"],
                lambda a, r: losscc.expectile_loss(a["inputs"], a["targets"], tau, reduction=r),
                lambda a: expectile_reference(a["inputs"], a["targets"], tau))


def pseudo_huber_loss(rng, variant):
    shape, delta = elementwise_shape(rng), float(rng.uniform(0.1, 3))
    x, y = rng.normal(0, 2, shape), rng.normal(0, 2, shape)
    return Case({"inputs": x, "targets": y}, ["inputs", "targets"],
                lambda a, r: losscc.pseudo_huber_loss(a["inputs"], a["targets"], delta, reduction=r),
                lambda a: pseudo_huber_reference(a["inputs"], a["targets"], delta))


def charbonnier_loss(rng, variant):
    shape, eps = elementwise_shape(rng), float(rng.uniform(1e-4, 1e-1))
    x, y = rng.normal(size=shape), rng.normal(size=shape)
    return Case({"inputs": x, "targets": y}, ["inputs", "targets"],
                lambda a, r: losscc.charbonnier_loss(a["inputs"], a["targets"], eps, reduction=r),
                lambda a: charbonnier_reference(a["inputs"], a["targets"], eps))


def tweedie_deviance(rng, variant):
    shape, power = elementwise_shape(rng), float(rng.uniform(1.05, 1.95))
    mu = rng.uniform(0.3, 3, shape)
    y = np.where(rng.uniform(size=shape) < 0.3, 0.0, rng.uniform(0, 6, shape))  # compound Poisson: exact zeros
    terms = lambda a: 2 * (a["targets"] ** (2 - power) / abs((1 - power) * (2 - power))
                           + a["targets"] * a["inputs"] ** (1 - power) / abs(1 - power)
                           + a["inputs"] ** (2 - power) / (2 - power))
    return Case({"inputs": mu, "targets": y}, ["inputs"],
                lambda a, r: losscc.tweedie_deviance(a["inputs"], a["targets"], power, reduction=r),
                lambda a: tweedie_reference(a["inputs"], a["targets"], power), terms=terms)


def squared_hinge_loss(rng, variant):
    shape = elementwise_shape(rng)
    y = rng.choice([-1.0, 1.0], shape)
    x = away_from(rng.normal(0, 2, shape) * y, 1.0, 0.05) * y  # away from x * y == 1
    return Case({"inputs": x, "targets": y}, ["inputs"],
                lambda a, r: losscc.squared_hinge_loss(a["inputs"], a["targets"], reduction=r),
                lambda a: squared_hinge_reference(a["inputs"], a["targets"]))


def cross_entropy_z_loss(rng, variant):
    """cross_entropy's new keyword-only options: the z-loss and ignore_index (with label smoothing)."""
    shape, axis = shape_with_axis(rng)
    smoothing, scale = float(rng.uniform(0, 0.5)), [0.0, 1e-4, float(rng.uniform(0, 1))][variant % 3]
    z = rng.normal(0, 2, shape)
    t = rng.integers(0, shape[axis], drop(shape, axis))
    ignore_index = [None, -100, 0][variant % 3]
    if ignore_index is not None:
        t = np.where(rng.uniform(size=t.shape) < 0.3, ignore_index, t)
        t.flat[0] = 1  # at least one row kept
    kept = None if ignore_index is None else t != ignore_index

    def reference(a):
        loss = cross_entropy_reference(a["logits"], np.where(a["targets"] < 0, 0, a["targets"]), smoothing, scale)
        return loss if kept is None else np.where(kept, loss, 0.0)

    return Case({"logits": z, "targets": t}, ["logits"],
                lambda a, r: losscc.cross_entropy(a["logits"], a["targets"], None, axis, smoothing, r,
                                                  ignore_index=ignore_index, lse_square_scale=scale),
                reference, axis, kept,
                terms=lambda a: cross_entropy_terms(np.moveaxis(a["logits"], axis, -1), np.maximum(a["targets"], 0)))


def binary_cross_entropy_label_smoothing(rng, variant):
    shape = elementwise_shape(rng)
    with_logits, smoothing = bool(variant & 1), float(rng.uniform(0, 1))
    x = rng.normal(0, 3, shape) if with_logits else rng.uniform(0.02, 0.98, shape)
    y = rng.integers(0, 2, shape).astype(np.float64)
    return Case({"inputs": x, "targets": y}, ["inputs", "targets"],
                lambda a, r: losscc.binary_cross_entropy(a["inputs"], a["targets"], None, with_logits, r,
                                                         label_smoothing=smoothing),
                lambda a: bce_label_smoothing_reference(a["inputs"], a["targets"], with_logits, smoothing))


CASES = [
    poisson_nll_loss, soft_margin_loss, hinge_embedding_loss, cosine_embedding_loss, multi_margin_loss,
    multilabel_soft_margin_loss, triplet_margin_loss, kl_div, binary_cross_entropy_with_logits,
    sigmoid_focal_loss, softmax_focal_loss, poly1_cross_entropy, jensen_shannon_divergence, binary_dice_loss,
    tversky_loss, pinball_loss, expectile_loss, pseudo_huber_loss, charbonnier_loss, tweedie_deviance,
    squared_hinge_loss, cross_entropy_z_loss, binary_cross_entropy_label_smoothing,
    multiclass_hinge_loss, multiclass_perceptron_loss, generalized_kl_divergence, ranking_softmax_loss,
]


def draw(make, seed):
    return make(np.random.default_rng([seed, CASES.index(make), 7]), seed)


def to_mx(arrays, dtype):
    """MLX arrays of ``dtype`` (mx.array alone would turn float64 into float32); class indices stay int64."""
    return {k: mx.array(v, dtype=mx.int64 if v.dtype.kind == "i" else dtype) for k, v in arrays.items()}


def relative_error(ours, expected, terms=0.0, noise=0.0):
    """Largest error relative to each element (floored at 1e-3 of the largest, for elements near 0).

    ``terms`` adds to each element's scale the magnitude of the terms that cancel in it; differences
    below ``noise`` (the reference's own error) count as none.
    """
    ours, expected = np.asarray(ours, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert ours.shape == expected.shape, f"shape {ours.shape} != reference {expected.shape}"
    assert np.all(np.isfinite(ours)), f"not finite: {ours}"
    scale = np.abs(expected) + 1e-3 * np.max(np.abs(expected), initial=0.0) + terms + 1e-300
    return np.max(np.maximum(np.abs(ours - expected) - noise, 0.0) / scale, initial=0.0)


# ---------------------------------------------------------------- the checks every loss gets

@pytest.fixture
def eager():
    """Run the generated functions uncompiled.

    The float64 checks test the math (formula and derivation), which compilation does not change; compiled,
    every new parameter value is a new C++ kernel to build (~0.5 s each on CPU). The float32 checks of the
    first draw (and of the torch parity tests) run the compiled functions users get.
    """
    mx.disable_compile()
    yield
    mx.enable_compile()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__)
def test_float64_values_match_reference(make, seed, eager):
    case = draw(make, seed)
    for reduction in REDUCTIONS:
        ours = case.ours(to_mx(case.arrays, mx.float64), reduction)
        assert ours.dtype == mx.float64
        error = relative_error(ours, case.expected(case.arrays, reduction))
        assert error < FLOAT64_TOLERANCE, f"{make.__name__} reduction={reduction}: relative error {error:.2e}"


def finite_difference(function, arrays, name, step=1e-6):
    """Central differences of the scalar ``function(arrays)`` for each element of ``arrays[name]``."""
    gradient = np.zeros_like(arrays[name])
    for index in np.ndindex(arrays[name].shape):
        values = {}
        for sign in (1, -1):
            moved = arrays[name].copy()
            moved[index] += sign * step
            values[sign] = function(arrays | {name: moved})
        gradient[index] = (values[1] - values[-1]) / (2 * step)
    return gradient


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__)
def test_float64_gradients_match_finite_differences(make, seed, eager):
    case = draw(make, seed)
    rng = np.random.default_rng(seed)
    for reduction in REDUCTIONS:
        cotangent = rng.normal(size=np.shape(case.expected(case.arrays, reduction)))

        def objective(differentiable):
            arrays = to_mx(case.arrays, mx.float64) | differentiable
            return mx.sum(case.ours(arrays, reduction) * mx.array(cotangent, dtype=mx.float64))

        ours = mx.grad(objective)(to_mx({n: case.arrays[n] for n in case.differentiable}, mx.float64))
        reference = lambda arrays: np.sum(case.expected(arrays, reduction) * cotangent)
        noise = 1e-8 * max(1.0, abs(reference(case.arrays)))  # finite differences' rounding, for gradients near 0
        for name in case.differentiable:
            expected = finite_difference(reference, case.arrays, name)
            error = relative_error(ours[name], expected, noise=noise)
            assert error < FINITE_DIFFERENCE_TOLERANCE, (
                f"{make.__name__} d/d{name} reduction={reduction}: relative error {error:.2e}")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__)
def test_float32_values_near_float64_reference(make, seed, request):
    if seed != 0:  # the first draw runs compiled, as users run it; the others uncompiled (see eager)
        request.getfixturevalue("eager")
    case = draw(make, seed)
    rounded = {k: v if v.dtype.kind == "i" else v.astype(np.float32).astype(np.float64) for k, v in case.arrays.items()}
    for reduction in REDUCTIONS:
        ours = case.ours(to_mx(rounded, mx.float32), reduction)
        assert ours.dtype == mx.float32
        terms = 0.0 if case.terms is None else case.terms(rounded)
        terms = terms if reduction == "none" else np.sum(terms)
        error = relative_error(ours, case.expected(rounded, reduction), terms)
        assert error < FLOAT32_TOLERANCE, f"{make.__name__} reduction={reduction}: relative error {error:.2e}"


# ---------------------------------------------------------------- kinks (each spec documents its convention)

def grad_of(function, *arrays):
    """The gradient of sum(function(arrays)) for each array (float64)."""
    values = [mx.array(a, dtype=mx.float64) for a in arrays]
    gradients = mx.grad(lambda v: mx.sum(function(*v)))(values)  # a list in, a list out
    return [np.array(g) for g in gradients]


def test_multiclass_hinge_gradient_where_the_label_ties_the_highest_other_score():
    # scores + 1 - onehot is [1, 2, 1]: the maximum is class 1's alone; the label's own score (tied with class
    # 1's) gives -1, the maximum's +1. (A gradient split into a dense part and a term at the label lost the
    # one-hot inside the maximum's condition, and gave 0 at the label.)
    labels = mx.array([0])
    (grad,) = grad_of(lambda s: losscc.multiclass_hinge_loss(s, labels), np.array([[1.0, 1.0, 0.0]]))
    np.testing.assert_allclose(grad, [[-1.0, 1.0, 0.0]])


def test_generalized_kl_at_zero_targets_is_the_measure_with_gradient_minus_log_predictions_minus_one():
    # the spec's kink: targets * log(targets) is 0 at targets == 0, and its slope there is taken as 0
    log_predictions, targets = np.array([[-0.5, 0.3]]), np.array([[0.0, 0.0]])
    loss = losscc.generalized_kl_divergence(mx.array(log_predictions, dtype=mx.float64),
                                            mx.array(targets, dtype=mx.float64))
    np.testing.assert_allclose(np.array(loss), [np.exp(-0.5) + np.exp(0.3)])
    _, grad_targets = grad_of(losscc.generalized_kl_divergence, log_predictions, targets)
    np.testing.assert_allclose(grad_targets, -log_predictions - 1)


def test_ranking_softmax_masked_items_contribute_nothing():
    """optax's ``where``: a masked item (logit -inf, label 0) leaves the loss and the other gradients as
    if it were not in the list, and gets a gradient of 0; a list with nothing relevant has loss 0."""
    logits = np.array([[0.3, -np.inf, 1.2, -0.5], [0.1, 0.2, -np.inf, -np.inf]])
    labels = np.array([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    got, grad = mx.value_and_grad(lambda z: losscc.ranking_softmax_loss(z, mx.array(labels), reduction="sum"))(
        mx.array(logits, dtype=mx.float64))
    kept = [0, 2, 3]
    want = ranking_softmax_reference(logits[0, kept], labels[0, kept])
    assert np.isclose(float(got), want, rtol=1e-12, atol=0)
    softmax = np.exp(logits[0, kept] - logsumexp(logits[0, kept]))
    want_grad = labels[0, kept].sum() * softmax - labels[0, kept]
    grad = np.array(grad)
    assert np.allclose(grad[0, kept], want_grad, rtol=1e-12, atol=1e-15)
    assert grad[0, 1] == 0 and np.all(grad[1] == 0)
    # a NaN logit is not masked, whatever its label: NaN in, NaN out
    nan_row = mx.array([[np.nan, 0.2, 1.0]])
    assert np.isnan(float(losscc.ranking_softmax_loss(nan_row, mx.array([[0.0, 0.0, 0.0]]), reduction="sum")))


def test_pinball_at_zero_error_takes_the_slope_of_the_second_branch():
    # maximum(tau * e, (tau - 1) * e) with e = targets - inputs: at a tie the gradient goes to (tau - 1) * e
    tau = 0.3
    (grad_inputs,) = grad_of(lambda x: losscc.pinball_loss(x, mx.array([1.0, -2.0], dtype=mx.float64), tau,
                                                           reduction="none"), np.array([1.0, -2.0]))
    np.testing.assert_allclose(grad_inputs, [1 - tau, 1 - tau])


def test_hinge_embedding_at_the_margin_has_zero_gradient():
    targets = mx.array([-1.0, -1.0, 1.0], dtype=mx.float64)
    (grad,) = grad_of(lambda x: losscc.hinge_embedding_loss(x, targets, margin=1.5, reduction="none"),
                      np.array([1.5, 1.0, 1.5]))
    np.testing.assert_allclose(grad, [0.0, -1.0, 1.0])


def test_multi_margin_hinge_at_zero_has_zero_gradient():
    # margin - x[y] + x[i] == 0 exactly for class 1; class 2 is inside the margin
    x = np.array([[2.0, 1.0, 1.5]])
    (grad,) = grad_of(lambda v: losscc.multi_margin_loss(v, mx.array([0]), margin=1.0, reduction="none"), x)
    np.testing.assert_allclose(grad, [[-1 / 3, 0.0, 1 / 3]])


def test_triplet_margin_gradient_is_finite_where_a_coordinate_difference_is_zero():
    """With eps=0, equal coordinates of anchor and positive: |u|^p has derivative 0 there for p > 1."""
    rng = np.random.default_rng(0)
    anchors, negatives = rng.normal(size=(3, 5)), rng.normal(size=(3, 5)) + 3
    positives = anchors + rng.normal(size=(3, 5))
    positives[:, 2] = anchors[:, 2]
    for p in (1.5, 2.0, 3.0):
        function = lambda a, pos, n: losscc.triplet_margin_loss(a, pos, n, margin=5.0, p=p, eps=0.0, reduction="none")
        ours = grad_of(function, anchors, positives, negatives)
        reference = lambda arrays: np.sum(triplet_margin_reference(arrays["a"], arrays["p"], arrays["n"], 5.0, p, 0.0,
                                                                    False))
        arrays = {"a": anchors, "p": positives, "n": negatives}
        for gradient, name in zip(ours, "apn"):
            assert np.all(np.isfinite(gradient))
            np.testing.assert_allclose(gradient, finite_difference(reference, arrays, name), rtol=1e-5, atol=1e-7)


def test_kl_div_at_zero_target_is_zero_with_gradient_minus_inputs():
    inputs = np.array([-1.0, -2.0])
    targets = np.array([0.0, 0.0])
    loss = losscc.kl_div(mx.array(inputs, dtype=mx.float64), mx.array(targets, dtype=mx.float64), reduction="none")
    np.testing.assert_array_equal(np.array(loss), [0.0, 0.0])
    grad_inputs, grad_targets = grad_of(lambda x, t: losscc.kl_div(x, t, reduction="none"), inputs, targets)
    np.testing.assert_array_equal(grad_inputs, [0.0, 0.0])
    np.testing.assert_array_equal(grad_targets, -inputs)


# ---------------------------------------------------------------- stability at extreme inputs (float32)

@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_sigmoid_focal_loss_stays_finite_for_confident_logits(gamma):
    x = np.array([-80.0, -30.0, 30.0, 80.0, -80.0, 30.0], dtype=np.float32)
    y = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 0.0], dtype=np.float32)  # four right, two badly wrong
    loss, grad = mx.value_and_grad(
        lambda v: mx.sum(losscc.sigmoid_focal_loss(v, mx.array(y), 0.25, gamma, reduction="none")))(mx.array(x))
    grad = np.array(grad)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(grad))
    alpha_t = np.where(y == 1, 0.25, 0.75)
    if gamma == 0.0:  # plain weighted BCE: gradient alpha_t * (sigmoid(x) - y), i.e. -sigmoid(-x) for y = 1
        sigmoid = lambda u: 1 / (1 + np.exp(-u.astype(np.float64)))
        np.testing.assert_allclose(grad, alpha_t * np.where(y == 1, -sigmoid(-x), sigmoid(x)), rtol=1e-5, atol=1e-40)
    # badly wrong: (1 - p_t)^gamma = 1, so the gradient is that of the BCE, alpha_t * (sigmoid(x) - y) = -+alpha_t
    np.testing.assert_allclose(grad[4:], [-0.25, 0.75], rtol=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_softmax_focal_loss_stays_finite_for_confident_logits(gamma):
    logits = np.array([[60.0, 0.0, -10.0], [0.0, 60.0, 1.0]], dtype=np.float32)
    targets = np.array([0, 0])  # the first row right with p_t = 1 in float32, the second badly wrong
    loss, grad = mx.value_and_grad(
        lambda z: mx.sum(losscc.softmax_focal_loss(z, mx.array(targets), gamma=gamma, reduction="none")))(
        mx.array(logits))
    grad = np.array(grad)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(grad))
    softmax = np.exp(log_softmax(logits.astype(np.float64)))
    if gamma == 0.0:  # cross entropy: softmax - onehot
        np.testing.assert_allclose(grad, softmax - np.eye(3)[targets], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad[1], (softmax - np.eye(3)[targets])[1], rtol=1e-5, atol=1e-6)


def test_jensen_shannon_divergence_of_vanishing_probabilities_is_finite():
    log_q = np.array([[-300.0, -250.0, 0.0], [-1e4, -5.0, -0.01]], dtype=np.float32)
    log_p = np.array([[-260.0, -300.0, 0.0], [-3.0, -1e4, -0.06]], dtype=np.float32)
    loss, (grad_q, grad_p) = mx.value_and_grad(
        lambda q, p: mx.sum(losscc.jensen_shannon_divergence(q, p, reduction="none")), argnums=(0, 1))(
        mx.array(log_q), mx.array(log_p))
    assert np.isfinite(float(loss)) and np.all(np.isfinite(np.array(grad_q))) and np.all(np.isfinite(np.array(grad_p)))
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        p, q = np.exp(log_p.astype(np.float64)), np.exp(log_q.astype(np.float64))
        m = (p + q) / 2
        expected = 0.5 * np.nansum(p * np.log(p / m), -1) + 0.5 * np.nansum(q * np.log(q / m), -1)
    np.testing.assert_allclose(float(loss), expected.sum(), rtol=1e-5)


# ---------------------------------------------------------------- the new options' edge cases

def test_ignore_index_off_by_default_and_for_probability_targets():
    rng = np.random.default_rng(1)
    logits = mx.array(rng.normal(size=(6, 4)).astype(np.float32))
    indices = mx.array(rng.integers(0, 4, 6))
    plain = losscc.cross_entropy(logits, indices, reduction="mean")
    np.testing.assert_array_equal(np.array(plain), np.array(losscc.cross_entropy(logits, indices, reduction="mean",
                                                                                 ignore_index=None)))
    probabilities = mx.softmax(mx.array(rng.normal(size=(6, 4)).astype(np.float32)), axis=-1)
    np.testing.assert_array_equal(
        np.array(losscc.cross_entropy(logits, probabilities, reduction="none", ignore_index=0)),
        np.array(losscc.cross_entropy(logits, probabilities, reduction="none")))


def test_ignore_index_rows_have_no_gradient_and_all_ignored_mean_is_nan():
    logits = mx.array(np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32))
    targets = mx.array([1, -100, 2])
    grad = np.array(mx.grad(lambda z: losscc.cross_entropy(z, targets, reduction="mean", ignore_index=-100))(logits))
    assert np.all(grad[1] == 0) and np.all(grad[[0, 2]] != 0)
    everything_ignored = losscc.nll_loss(logits, mx.array([-100, -100, -100]), reduction="mean", ignore_index=-100)
    assert np.isnan(float(everything_ignored))  # 0 / 0, as torch.nn.functional.nll_loss


def test_ignore_index_must_be_an_integer():
    logits, targets = mx.zeros((2, 3)), mx.array([0, 1])
    with pytest.raises(ValueError, match="Ignore index must be an integer, got 1.5"):  # MLX's wording of names
        losscc.cross_entropy(logits, targets, ignore_index=1.5)


def test_class_weights_none_is_all_ones_and_shape_is_checked():
    rng = np.random.default_rng(3)
    inputs = mx.array(rng.normal(size=(4, 5)).astype(np.float32))
    targets = mx.array(rng.integers(0, 5, 4))
    np.testing.assert_array_equal(
        np.array(losscc.multi_margin_loss(inputs, targets, reduction="none")),
        np.array(losscc.multi_margin_loss(inputs, targets, mx.ones(5), reduction="none")))
    with pytest.raises(ValueError, match=r"weight must have shape \(5,\)"):
        losscc.multi_margin_loss(inputs, targets, mx.ones(4))
    with pytest.raises(ValueError, match=r"pos_weight must have shape \(5,\)"):
        losscc.binary_cross_entropy_with_logits(inputs, mx.zeros((4, 5)), pos_weight=mx.ones((4, 5)))


def test_class_weights_get_a_zero_gradient():
    inputs = mx.array(np.random.default_rng(4).normal(size=(3, 4)).astype(np.float32))
    weight = mx.array([1.0, 2.0, 3.0, 4.0])
    grad = mx.grad(lambda w: losscc.multilabel_soft_margin_loss(inputs, mx.ones((3, 4)), w), argnums=0)(weight)
    np.testing.assert_array_equal(np.array(grad), np.zeros(4))


def test_binary_dice_loss_gives_multiclass_dice_over_class_maps():
    """Multi-class soft Dice (mean over samples and classes of the per-class Dice over pixels)."""
    rng = np.random.default_rng(5)
    samples, classes, pixels = 2, 3, 10
    probabilities = np.exp(log_softmax(np.moveaxis(rng.normal(size=(samples, classes, pixels)), 1, -1)))
    probabilities = np.moveaxis(probabilities, -1, 1)  # softmax over the class axis
    labels = rng.integers(0, classes, (samples, pixels))
    one_hot = np.moveaxis(np.eye(classes)[labels], -1, 1)
    per_class = [[1 - (2 * np.sum(probabilities[n, c] * one_hot[n, c]) + 1)
                  / (np.sum(probabilities[n, c]) + np.sum(one_hot[n, c]) + 1)
                  for c in range(classes)] for n in range(samples)]
    ours = losscc.binary_dice_loss(mx.array(probabilities, dtype=mx.float64), mx.array(one_hot, dtype=mx.float64))
    np.testing.assert_allclose(float(ours), np.mean(per_class), rtol=1e-12)
