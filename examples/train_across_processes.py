"""Train a small classifier across processes: its body data-parallel, its head replicated or split by classes.

    mlx.launch -n 2 --backend ring -- python -m examples.train_across_processes
    mlx.launch -n 2 --backend ring -- python -m examples.train_across_processes --head split
    python -m examples.train_across_processes        # one process: the same training, for comparison

Each rank holds its own share of every batch, of uneven size, with its own
padding rows (targets at ignore_index).

``--head replicated`` (data parallel): every rank holds the whole model. With
``group=`` the cross entropy is the mean over every rank's kept rows, not the
mean of the ranks' means, and ``sum_gradients`` adds the ranks' gradients into
the global one (``mlx.nn.average_gradients`` would divide it by the number of
ranks).

``--head split`` (a vocabulary-parallel head): each rank holds an uneven slice
of the head's classes (its rows of the weight and bias). The ranks' hidden
states are gathered, and ``linear_cross_entropy(..., class_group=)`` gives the
loss of the whole head over every rank's tokens, never making the logits of
the classes a rank does not hold: each rank gets its rows of the head's
gradient, whole, and its own tokens' part of the body's (summed by
``sum_gradients``).

Every rank prints the loss of its own rows and the global loss; at the end,
the body's digest (the same on every rank) and each class's head digest (from
the rank holding it): to float32 rounding, the same as one process training on
the whole batches.
"""

from __future__ import annotations

import argparse
import json
import sys

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

import generated

FEATURES, WIDTH, CLASSES, BATCH = 16, 32, 10, 24
IGNORE_INDEX = -100


def batches(steps, seed=0):
    """The whole batches, the same on every rank: features, and classes from a fixed rule, some rows padding."""
    rng = np.random.default_rng(seed)
    rule = rng.normal(size=(FEATURES, CLASSES))
    for _ in range(steps):
        x = rng.normal(size=(BATCH, FEATURES)).astype(np.float32)
        y = (x @ rule).argmax(-1).astype(np.int32)
        y[rng.random(BATCH) < 0.3] = IGNORE_INDEX  # padding, unevenly spread over the ranks' rows
        yield mx.array(x), mx.array(y)


def shares(total, size):
    """Each rank's ``(start, stop)`` of ``total`` things: uneven (rank r's share grows with r)."""
    weights = np.arange(1, size + 1)
    bounds = np.concatenate([[0], np.cumsum(weights)]) * total // weights.sum()
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


class Classifier(nn.Module):
    def __init__(self, classes=slice(None)):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(FEATURES, WIDTH), nn.ReLU())
        self.head = nn.Linear(WIDTH, CLASSES)
        # a split head: this rank's rows of it (``classes``), the same initial values as the whole head's
        self.head.weight, self.head.bias = self.head.weight[classes], self.head.bias[classes]


def gathered(rows, group, fill=0):
    """Every rank's ``rows``, one after another, each share padded to the longest with ``fill`` (all_gather
    takes equal shapes); its gradient in this rank's rows is that of this rank's part."""
    longest = max(b - a for a, b in shares(BATCH, group.size()))
    padding = mx.full((longest - rows.shape[0], *rows.shape[1:]), fill, rows.dtype)
    return mx.distributed.all_gather(mx.concatenate([rows, padding]), group=group)


def replicated_loss(model, x, y, group, reduction="mean"):
    """The mean over every rank's rows (group=): each rank's logits are its own rows'."""
    return generated.cross_entropy(model.head(model.body(x)), y, reduction=reduction, ignore_index=IGNORE_INDEX,
                                   group=group)


def split_loss(model, x, y, group, reduction="mean"):
    """Every rank's rows through the whole head, whose classes are split across the ranks (class_group=)."""
    hidden, targets = gathered(model.body(x), group), gathered(y, group, fill=IGNORE_INDEX)
    return generated.linear_cross_entropy(hidden, model.head, targets, reduction=reduction,
                                          ignore_index=IGNORE_INDEX, class_group=group)


def own_rows_loss(loss_fn, model, x, y, group):
    """The mean loss of this rank's own kept rows, after the step (every rank computes its per-row losses
    together, so that the split head's collectives meet)."""
    per_row = loss_fn(model, x, y, group, reduction="none")
    if loss_fn is split_loss:  # every rank's rows: this rank's are its share of them
        longest = max(b - a for a, b in shares(BATCH, group.size()))
        per_row = per_row[group.rank() * longest:][: x.shape[0]]
    kept = y != IGNORE_INDEX
    return float(mx.sum(mx.where(kept, per_row, 0)) / mx.maximum(mx.sum(kept), 1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--report-every", type=int, default=10)
    parser.add_argument("--head", choices=["replicated", "split"], default="replicated")
    options = parser.parse_args(argv)
    group = mx.distributed.init()  # ring, MPI...: as mlx.launch sets up; alone, a group of one
    start, stop = shares(BATCH, group.size())[group.rank()]
    classes = shares(CLASSES, group.size())[group.rank()] if options.head == "split" else (0, CLASSES)

    mx.random.seed(0)  # the same initial parameters on every rank
    model = Classifier(slice(*classes))
    optimizer = optim.SGD(learning_rate=0.5)
    loss_fn = split_loss if options.head == "split" else replicated_loss

    step_fn = nn.value_and_grad(model, loss_fn)
    for step, (x, y) in enumerate(batches(options.steps), 1):
        x, y = x[start:stop], y[start:stop]
        loss, grads = step_fn(model, x, y, group)
        if options.head == "split":  # each rank has its head rows' whole gradient, its own rows' part of the body's
            grads["body"] = generated.sum_gradients(grads["body"], group)
        else:
            grads = generated.sum_gradients(grads, group)
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state)
        if step % options.report_every == 0:
            own = own_rows_loss(loss_fn, model, x, y, group)
            print(f"rank {group.rank()} step {step}: own rows {own:.5f}, global {float(loss):.5f}")
    body = [float(mx.sum(p)) for _, p in tree_flatten(model.body.parameters())]
    head = (mx.sum(model.head.weight, axis=1) + model.head.bias).tolist()  # one number per class held
    print(json.dumps({"rank": group.rank(), "loss": float(loss), "body": body, "classes": classes, "head": head}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
