"""Train a small MLX model with a generated loss and with its mlx.nn.losses twin.

Both runs start from the same weights and see the same batches, so their loss
curves must agree to float32 rounding: the script checks that (exit status 1
otherwise) and prints the time per step of each. Run from the repository root:

    python -m examples.train_regression
    python -m examples.train_regression --loss log_cosh_loss --steps 100

Time per step is printed to show the generated loss is usable in a training
loop; comparisons of speed belong to `make bench`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

import generated

# Generated losses with an mlx.nn.losses twin of the same name and a (predictions, targets) signature.
REGRESSION_LOSSES = ("huber_loss", "smooth_l1_loss", "log_cosh_loss", "mse_loss", "l1_loss")
AGREEMENT = 1e-5  # largest relative difference allowed between the two curves (float32 rounding)


@dataclass
class Run:
    losses: list  # the training loss at each step
    seconds: list  # wall time of each step


class MLP(nn.Module):
    def __init__(self, features, hidden):
        super().__init__()
        self.hidden = nn.Linear(features, hidden)
        self.out = nn.Linear(hidden, 1)

    def __call__(self, x):
        return self.out(nn.gelu(self.hidden(x)))


def synthetic_data(samples, features, seed):
    """y = sin(x . w) plus noise with a few large outliers (where robust losses differ from mse)."""
    k_x, k_w, k_noise, k_outliers = mx.random.split(mx.random.key(seed), 4)
    x = mx.random.normal((samples, features), key=k_x)
    w = mx.random.normal((features, 1), key=k_w) / features**0.5
    noise = 0.1 * mx.random.normal((samples, 1), key=k_noise)
    outliers = 5.0 * (mx.random.uniform(shape=(samples, 1), key=k_outliers) < 0.05)
    return x, mx.sin(2 * x @ w) + noise + outliers


def train(loss_fn, x, y, *, steps, batch, hidden, learning_rate, seed):
    """Train a fresh MLP (weights from ``seed``) with ``loss_fn``; the batches depend on ``seed`` only."""
    mx.random.seed(seed)
    model = MLP(x.shape[1], hidden)
    mx.eval(model.parameters())
    optimizer = optim.Adam(learning_rate=learning_rate)

    def objective(model, inputs, targets):
        return loss_fn(model(inputs), targets, reduction="mean")

    value_and_grad = nn.value_and_grad(model, objective)
    state = [model.state, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(inputs, targets):
        loss, grads = value_and_grad(model, inputs, targets)
        optimizer.update(model, grads)
        return loss

    order = mx.random.permutation(x.shape[0], key=mx.random.key(seed))
    losses, seconds = [], []
    for i in range(steps):
        rows = order[(i * batch + mx.arange(batch)) % x.shape[0]]
        inputs, targets = x[rows], y[rows]
        mx.eval(inputs, targets)
        start = time.perf_counter()
        loss = step(inputs, targets)
        mx.eval(loss, state)
        seconds.append(time.perf_counter() - start)
        losses.append(loss.item())
    return Run(losses, seconds)


def largest_relative_difference(a, b):
    return max(abs(p - q) / max(abs(q), 1e-12) for p, q in zip(a, b))


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loss", choices=REGRESSION_LOSSES, default="huber_loss")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=0, help="Steps per printed line (default: about 10 lines).")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    x, y = synthetic_data(args.samples, args.features, args.seed)
    settings = dict(steps=args.steps, batch=args.batch, hidden=args.hidden,
                    learning_rate=args.learning_rate, seed=args.seed)
    ours = train(getattr(generated, args.loss), x, y, **settings)
    twin = train(getattr(nn.losses, args.loss), x, y, **settings)

    print(f"{args.loss}: {args.steps} steps of Adam on {args.samples} samples, batch {args.batch}")
    print("mean training loss over each window of steps (single batches are noisy: 5% outliers)")
    print(f"{'steps':>11}  {'generated':>10}  {'mlx.nn.losses':>13}  {'largest rel. diff':>17}")
    window = args.every or max(1, args.steps // 10)
    for first in range(0, args.steps, window):
        a, b = ours.losses[first:first + window], twin.losses[first:first + window]
        steps = f"{first}-{first + len(a) - 1}"
        print(f"{steps:>11}  {statistics.fmean(a):>10.6f}  {statistics.fmean(b):>13.6f}  "
              f"{largest_relative_difference(a, b):>17.1e}")
    if args.steps > 1:  # the first step compiles; leave it out of the time
        print(f"time per step (median of {args.steps - 1} after the first): "
              f"generated {1e3 * statistics.median(ours.seconds[1:]):.2f} ms, "
              f"mlx.nn.losses {1e3 * statistics.median(twin.seconds[1:]):.2f} ms")
    difference = largest_relative_difference(ours.losses, twin.losses)
    if difference > AGREEMENT:
        print(f"the curves disagree: largest relative difference {difference:.1e} > {AGREEMENT:.0e}")
        return 1
    print(f"the curves agree: largest relative difference {difference:.1e} (at most {AGREEMENT:.0e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
