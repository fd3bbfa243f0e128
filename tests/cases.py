"""Random, kink-free arguments for the losses that mlx.nn.losses also has.

Each maker takes a numpy Generator, a shape and an axis and returns a Case:
the arrays (MLX, float32 or int), non-default parameter values, and the
array arguments to differentiate. Inputs keep a margin of at least GAP from
every kink so finite differences and autodiff agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

GAP = 0.05


@dataclass
class Case:
    arrays: dict
    params: dict = field(default_factory=dict)
    axis: int | None = None
    differentiable: tuple = ()
    weights: object = None

    def kwargs(self):
        extra = dict(self.params)
        if self.axis is not None:
            extra["axis"] = self.axis
        if self.weights is not None:
            extra["weights"] = self.weights
        return extra


def f32(a):
    return mx.array(np.asarray(a, dtype=np.float32))


def away(rng, shape, low, high, kinks):
    """Uniform values in [low, high] at least GAP from each kink."""
    values = rng.uniform(low, high, size=shape)
    for _ in range(100):
        near = np.zeros(shape, dtype=bool)
        for k in kinks:
            near |= np.abs(values - k) < GAP
        if not near.any():
            return values
        values[near] = rng.uniform(low, high, size=near.sum())
    raise RuntimeError("could not draw kink-free values")


def signed(rng, shape, low, high, kinks=()):
    """Values of random sign whose magnitude avoids 0 and the kinks."""
    return rng.choice([-1.0, 1.0], size=shape) * away(rng, shape, max(low, GAP), high, kinks)


def log_softmax(z, axis):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def regression(name, kink=None):
    def make(rng, shape, axis, tweak):
        param = {"huber_loss": "delta", "smooth_l1_loss": "beta"}.get(name)
        value = rng.uniform(0.3, 2.0) if tweak and param else 1.0
        x = rng.normal(size=shape)
        d = signed(rng, shape, GAP, 3.0, [value] if kink else ()) if kink is not None else rng.normal(size=shape)
        arrays = {"predictions" if name in ("mse_loss", "l1_loss", "smooth_l1_loss") else "inputs": f32(x),
                  "targets": f32(x - d)}
        keys = list(arrays)
        return Case(arrays, {param: value} if (tweak and param) else {}, None, tuple(keys))
    return make


def hinge(rng, shape, axis, tweak):
    t = rng.choice([-1.0, 1.0], size=shape)
    margin = 1 - away(rng, shape, -2.0, 2.0, [0.0])  # x * t
    return Case({"inputs": f32(margin * t), "targets": f32(t)}, {}, None, ("inputs", "targets"))


def margin_ranking(rng, shape, axis, tweak):
    t = rng.choice([-1.0, 1.0], size=shape)
    margin = rng.uniform(0.1, 1.0) if tweak else 0.0
    u = away(rng, shape, -2.0, 2.0, [0.0])  # -t * (x1 - x2) + margin
    x2 = rng.normal(size=shape)
    x1 = x2 - (u - margin) / t
    return Case({"inputs1": f32(x1), "inputs2": f32(x2), "targets": f32(t)},
                {"margin": margin} if tweak else {}, None, ("inputs1", "inputs2", "targets"))


def bce(rng, shape, axis, tweak):
    with_logits = not tweak or rng.random() < 0.5
    x = rng.normal(scale=2.0, size=shape) if with_logits else rng.uniform(0.05, 0.95, size=shape)
    t = rng.uniform(0.0, 1.0, size=shape) if tweak else (rng.random(shape) < 0.5).astype(np.float64)
    weights = f32(rng.uniform(0.1, 2.0, size=shape)) if tweak else None
    return Case({"inputs": f32(x), "targets": f32(t)}, {"with_logits": with_logits} if tweak else {},
                None, ("inputs", "targets"), weights)


def gaussian(rng, shape, axis, tweak):
    arrays = {"inputs": f32(rng.normal(size=shape)), "targets": f32(rng.normal(size=shape)),
              "vars": f32(rng.uniform(0.1, 2.0, size=shape))}
    params = {"full": True, "eps": 1e-3} if tweak else {}
    return Case(arrays, params, None, ("inputs", "targets", "vars"))


def kl_div(rng, shape, axis, tweak):
    arrays = {"inputs": f32(log_softmax(rng.normal(size=shape), axis)),
              "targets": f32(log_softmax(rng.normal(size=shape), axis))}
    return Case(arrays, {}, axis, ("inputs", "targets"))


def _class_indices(rng, shape, axis):
    rows = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    return mx.array(rng.integers(0, shape[axis], size=rows).astype(np.int32))


def nll(rng, shape, axis, tweak):
    arrays = {"inputs": f32(log_softmax(rng.normal(size=shape), axis)), "targets": _class_indices(rng, shape, axis)}
    return Case(arrays, {}, axis, ("inputs",))


def cross_entropy(rng, shape, axis, tweak):
    logits = rng.normal(scale=2.0, size=shape)
    if tweak and rng.random() < 0.5:
        targets = f32(np.exp(log_softmax(rng.normal(size=shape), axis)))
    else:
        targets = _class_indices(rng, shape, axis)
    rows = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    weights = f32(rng.uniform(0.1, 2.0, size=rows)) if tweak else None
    params = {"label_smoothing": rng.uniform(0.05, 0.5)} if tweak else {}
    return Case({"logits": f32(logits), "targets": targets}, params, axis, ("logits",), weights)


def cosine(rng, shape, axis, tweak):
    arrays = {"x1": f32(rng.normal(size=shape)), "x2": f32(rng.normal(size=shape))}
    return Case(arrays, {"eps": 1e-6} if tweak else {}, axis, ("x1", "x2"))


def triplet(rng, shape, axis, tweak):
    p = int(rng.choice([1, 2, 3])) if tweak else 2
    margin = rng.uniform(0.2, 1.5) if tweak else 1.0
    for _ in range(100):
        a, pos, neg = (rng.normal(size=shape) for _ in range(3))
        dist = lambda u, v: (np.sum(np.abs(u - v) ** p, axis=axis) + 1e-6) ** (1 / p)
        if np.all(np.abs(dist(a, pos) - dist(a, neg) + margin) > GAP):
            break
    params = {"p": p, "margin": margin, "eps": 1e-5} if tweak else {}
    return Case({"anchors": f32(a), "positives": f32(pos), "negatives": f32(neg)}, params, axis,
                ("anchors", "positives", "negatives"))


MAKERS = {
    "mse_loss": regression("mse_loss"),
    "l1_loss": regression("l1_loss", kink=True),
    "huber_loss": regression("huber_loss", kink=True),
    "smooth_l1_loss": regression("smooth_l1_loss", kink=True),
    "log_cosh_loss": regression("log_cosh_loss"),
    "hinge_loss": hinge,
    "margin_ranking_loss": margin_ranking,
    "binary_cross_entropy": bce,
    "gaussian_nll_loss": gaussian,
    "kl_div_loss": kl_div,
    "nll_loss": nll,
    "cross_entropy": cross_entropy,
    "cosine_similarity_loss": cosine,
    "triplet_loss": triplet,
}

ELEMENTWISE_SHAPES = [((7,), None), ((3, 5), None), ((2, 3, 5), None)]
ROWWISE_SHAPES = [((9,), -1), ((5, 7), -1), ((4, 6), 0), ((2, 3, 5), 1)]
