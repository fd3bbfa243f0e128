"""Train a small classifier data-parallel across processes, its loss the mean over every rank (group=).

    mlx.launch -n 2 --backend ring -- python -m examples.train_across_processes
    python -m examples.train_across_processes        # one process: the same training, for comparison

Each rank holds its own share of every batch, of uneven size, with its own
padding rows (targets at ignore_index). With ``group=`` the cross entropy is
the mean over every rank's kept rows, not the mean of the ranks' means, and
``sum_gradients`` adds the ranks' gradients into the global one
(``mlx.nn.average_gradients`` would divide it by the number of ranks). Every
rank prints the loss of its own rows and the global loss; at the end, the
parameters' digest, the same on every rank and, to float32 rounding, the same
as one process training on the whole batches.
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

FEATURES, CLASSES, BATCH = 16, 10, 24
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


def shares(size):
    """The rows of each rank: uneven (rank r gets a share growing with r), all BATCH of them."""
    weights = np.arange(1, size + 1)
    bounds = np.concatenate([[0], np.cumsum(weights)]) * BATCH // weights.sum()
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--report-every", type=int, default=5)
    options = parser.parse_args(argv)
    group = mx.distributed.init()  # ring, MPI...: as mlx.launch sets up; alone, a group of one
    start, stop = shares(group.size())[group.rank()]

    mx.random.seed(0)  # the same initial parameters on every rank
    model = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, CLASSES))
    optimizer = optim.SGD(learning_rate=0.5)

    def loss_fn(model, x, y, group):
        return generated.cross_entropy(model(x), y, reduction="mean", ignore_index=IGNORE_INDEX, group=group)

    step_fn = nn.value_and_grad(model, loss_fn)
    for step, (x, y) in enumerate(batches(options.steps), 1):
        x, y = x[start:stop], y[start:stop]
        loss, grads = step_fn(model, x, y, group)
        optimizer.update(model, generated.sum_gradients(grads, group))
        mx.eval(model.parameters(), optimizer.state)
        if step % options.report_every == 0:
            own = loss_fn(model, x, y, None)  # this rank's rows alone, after the step
            print(f"rank {group.rank()} step {step}: own rows {float(own):.5f}, global {float(loss):.5f}")
    digest = [float(mx.sum(p)) for _, p in tree_flatten(model.parameters())]
    print(json.dumps({"rank": group.rank(), "loss": float(loss), "digest": digest}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
