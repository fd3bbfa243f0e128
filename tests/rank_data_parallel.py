"""One rank of tests/test_distributed.py: every loss's data-parallel mean and sum against one process's.

Run by tests/ranks.py (``MLX_RANK``, ``MLX_HOSTFILE``). Every rank builds the
same whole batch (the same seeds) and takes its own rows: uneven shares (one
rank's may be empty), and the rows an ignore_index drops unevenly spread (a
rank may keep none). Each rank computes every loss with ``group=`` and its
gradients in its own rows, and, by itself, the loss of the whole batch and its
gradients: the oracle. It prints one JSON line: per case, the value's and the
gradients' largest error relative to the oracle's scale, or what failed.
"""

from __future__ import annotations

import json
import sys

import mlx.core as mx
import numpy as np

import generated
from generator.spec import ClassWeights
from tests.arguments import LOSSES, make_call

ROWS, CLASSES, FEATURES = 10, 5, 6
SHARES = {1: [10], 2: [3, 7], 4: [1, 0, 3, 6]}  # rows of each rank
IGNORED = [0, 1, 2, 7]  # rows whose class is ignore_index: all of rank 0's (of 2 and of 4 ranks)
IGNORE_INDEX = -100


def error(got, want):
    """The largest difference, relative to the oracle's largest magnitude (NaN patterns must agree)."""
    got, want = np.asarray(got.astype(mx.float32), dtype=np.float64), np.asarray(want.astype(mx.float32), dtype=np.float64)
    if got.shape != want.shape or not np.array_equal(np.isnan(got), np.isnan(want)):
        return float("inf")
    finite = ~np.isnan(want)
    if not finite.any():
        return 0.0
    scale = max(1.0, float(np.max(np.abs(want[finite]))))
    return float(np.max(np.abs(got[finite] - want[finite]), initial=0.0)) / scale


def loss_cases(group, start, stop):
    """(case, error) for every loss, both reductions: this rank's rows with group= against the whole batch."""
    for name, loss in sorted(LOSSES.items()):
        call = make_call(loss, np.random.default_rng(len(name)), shape=(ROWS, CLASSES), weights=True)
        kwargs = call.kwargs()
        if any(t.ignore_index is not None for t in loss.class_targets):
            target = next(t for t in loss.class_targets if t.ignore_index is not None)
            kwargs[target.ignore_index.name] = IGNORE_INDEX
            call.arrays[target.name][IGNORED] = IGNORE_INDEX
        arrays = call.mx_arrays()
        shared = {i.name for i in loss.inputs if isinstance(i, ClassWeights)}  # per class: every rank's
        split = [n for n in arrays if n not in shared]
        differentiable = [n for n in call.differentiable if n in split]
        weights = {n: v for n, v in kwargs.items() if loss.weights is not None and n == loss.weights.name}
        options = {n: v for n, v in kwargs.items() if n not in weights}
        function = getattr(generated, name)
        for reduction in ("mean", "sum"):
            whole = {**arrays, **weights}
            mine = {**{n: (v[start:stop] if n in split else v) for n, v in arrays.items()},
                    **{n: v[start:stop] for n, v in weights.items()}}
            chosen = differentiable + list(weights)

            def objective(values_of, group=None):
                def f(*values):
                    given = {**values_of, **dict(zip(chosen, values))}
                    return function(**given, **options, reduction=reduction, group=group)
                return f

            want, want_grads = mx.value_and_grad(objective(whole), argnums=list(range(len(chosen))))(
                *[whole[n] for n in chosen])
            got, grads = mx.value_and_grad(objective(mine, group), argnums=list(range(len(chosen))))(
                *[mine[n] for n in chosen])
            if len(chosen) == 1:  # (MLX gives one array, not a list of one)
                grads, want_grads = [grads], [want_grads]
            worst = error(got, want)
            for g, w in zip(grads, want_grads):
                worst = max(worst, error(g, w[start:stop]))
            yield f"{name} {reduction}", worst


def linear_cases(group, start, stop):
    """linear_cross_entropy (ignore_index), linear_kl_div_loss and linear_cpo_loss (a row a pair of sequences,
    its NLL term the mean over every rank's kept chosen tokens) with group=: the rows' gradients, and the head's
    as sum_gradients combines each rank's."""
    rng = np.random.default_rng(5)
    hidden, teacher = (mx.array(rng.normal(size=(ROWS, FEATURES)).astype(np.float32)) for _ in range(2))
    head, teacher_head = (mx.array(rng.normal(size=(CLASSES + 3, FEATURES)).astype(np.float32)) for _ in range(2))
    targets = mx.array(rng.integers(0, CLASSES + 3, size=ROWS).astype(np.int32))
    targets[mx.array(IGNORED)] = IGNORE_INDEX
    tokens = 3
    chosen, rejected = (mx.array(rng.normal(size=(ROWS, tokens, FEATURES)).astype(np.float32)) for _ in range(2))
    chosen_labels, rejected_labels = (mx.array(rng.integers(0, CLASSES + 3, size=(ROWS, tokens)).astype(np.int32))
                                      for _ in range(2))
    chosen_labels[mx.array(IGNORED)] = IGNORE_INDEX  # these rows' chosen tokens count for nothing in the NLL
    forms = {
        "linear_cross_entropy": lambda h, w, rows, group: generated.linear_cross_entropy(
            h, w, targets[rows], reduction="mean", ignore_index=IGNORE_INDEX, chunk_size=2, group=group),
        "linear_kl_div_loss": lambda h, w, rows, group: generated.linear_kl_div_loss(
            h, w, teacher[rows], teacher_head, reduction="mean", chunk_size=2, group=group),
        "linear_cpo_loss": lambda h, w, rows, group: generated.linear_cpo_loss(
            h, rejected[rows], w, chosen_labels[rows], rejected_labels[rows], reduction="mean", chunk_size=2,
            group=group),
    }
    arrays = {"linear_cpo_loss": chosen}
    everything, mine = slice(0, ROWS), slice(start, stop)
    for name, form in forms.items():
        rows = arrays.get(name, hidden)
        want, (want_hidden, want_head) = mx.value_and_grad(
            lambda h, w: form(h, w, everything, None), argnums=[0, 1])(rows, head)
        got, (grad_hidden, grad_head) = mx.value_and_grad(
            lambda h, w: form(h, w, mine, group), argnums=[0, 1])(rows[mine], head)
        grad_head = generated.sum_gradients({"head": grad_head}, group)["head"]
        yield f"{name} mean", max(error(got, want), error(grad_hidden, want_hidden[mine]), error(grad_head, want_head))


def ctc_cases(group, start, stop):
    """ctc_loss with group=: this rank's sequences (of different lengths; mean divides each by its labels)."""
    rng = np.random.default_rng(6)
    frames, labels = 9, 3
    logits = rng.normal(size=(frames, ROWS, CLASSES))
    log_probs = mx.array((logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32))
    targets = mx.array(rng.integers(1, CLASSES, size=(ROWS, labels)).astype(np.int32))
    input_lengths = mx.array(rng.integers(7, frames + 1, size=ROWS).astype(np.int32))
    target_lengths = mx.array(rng.integers(0, labels + 1, size=ROWS).astype(np.int32))
    for reduction in ("mean", "sum"):
        def loss(x, rows, group):
            return generated.ctc_loss(x, targets[rows], input_lengths[rows], target_lengths[rows], reduction=reduction,
                                      group=group)
        want, want_grad = mx.value_and_grad(lambda x: loss(x, slice(0, ROWS), None))(log_probs)
        got, grad = mx.value_and_grad(lambda x: loss(x, slice(start, stop), group))(log_probs[:, start:stop])
        yield f"ctc_loss {reduction}", max(error(got, want), error(grad, want_grad[:, start:stop]))


def vmap_cases(group, start, stop):
    """cross_entropy with group= under mx.vmap: two batches, each item's mean over every rank's rows kept, and
    the gradient of the items' losses weighted (the vmap rule reduces each item, then the ranks sum them)."""
    rng = np.random.default_rng(8)
    logits = mx.array(rng.normal(size=(2, ROWS, CLASSES)).astype(np.float32))
    targets = rng.integers(0, CLASSES, size=(2, ROWS))
    targets[0, IGNORED] = IGNORE_INDEX
    targets = mx.array(targets.astype(np.int32))
    weight = mx.array([1.0, -2.0])

    def loss(rows, group):
        item = lambda x, t: generated.cross_entropy(x, t, reduction="mean", ignore_index=IGNORE_INDEX, group=group)
        return lambda x: mx.sum(mx.vmap(item)(x, targets[:, rows]) * weight)
    want, want_grad = mx.value_and_grad(loss(slice(0, ROWS), None))(logits)
    got, grad = mx.value_and_grad(loss(slice(start, stop), group))(logits[:, start:stop])
    yield "cross_entropy mean under vmap", max(error(got, want), error(grad, want_grad[:, start:stop]))


def main():
    group = mx.distributed.init(backend="ring", strict=True)
    bounds = np.cumsum([0] + SHARES[group.size()])
    start, stop = int(bounds[group.rank()]), int(bounds[group.rank() + 1])
    errors = {}
    for cases in (loss_cases, linear_cases, ctc_cases, vmap_cases):
        for case, worst in cases(group, start, stop):
            errors[case] = worst
    print(json.dumps({"rank": group.rank(), "size": group.size(), "errors": errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
