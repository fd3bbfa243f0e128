"""One rank of tests/test_distributed.py: every row-wise loss with its classes split across the ranks.

Run by tests/ranks.py. Every rank builds the same whole rows (the same seeds)
and holds its own slice of the class axis: uneven slices, one rank's possibly
empty. Each rank computes the loss with ``class_group=`` (every variant and
target form, each reduction, an ignore_index dropping some rows where the loss
has one) and its gradients in its slice; and, by itself, the loss of the whole
rows and its gradients: the oracle. The same for linear_cross_entropy with its
head's rows split, and for the distillation forms with both heads' rows split. It prints one JSON line: per case, the
value's and the gradients' largest error relative to the oracle's scale.
"""

from __future__ import annotations

import json
import sys

import mlx.core as mx
import numpy as np

import generated
from generator.spec import ClassTarget, ClassWeights
from tests.arguments import LOSSES, make_call, variant_id, variants
from tests.rank_data_parallel import IGNORE_INDEX, IGNORED, error

ROWS, CLASSES = 10, 11
SLICES = {1: [11], 2: [4, 7], 4: [3, 0, 5, 3]}  # classes of each rank
ROWWISE = sorted(name for name, loss in LOSSES.items() if loss.kind == "rowwise")


def cases(group, start, stop):
    """(case, error) for every row-wise loss, variant, target form and reduction."""
    for name in ROWWISE:
        loss = LOSSES[name]
        function = getattr(generated, name)
        for flags, form in variants(loss):
            call = make_call(loss, np.random.default_rng(len(name)), shape=(ROWS, CLASSES), flags=flags,
                             form=form or "indices", weights=True)
            kwargs = call.kwargs()
            ignore = next((t for t in loss.class_targets if t.ignore_index is not None), None)
            if ignore is not None and form == "indices":
                kwargs[ignore.ignore_index.name] = IGNORE_INDEX
                call.arrays[ignore.name][IGNORED] = IGNORE_INDEX
            arrays = call.mx_arrays()
            # element-level arrays (and per-class weights) are cut along the classes; per-row ones are whole
            cut = {i.name for i in loss.inputs
                   if i.name in arrays and arrays[i.name].ndim == 2 and not getattr(i, "per_row", False)
                   and not (isinstance(i, ClassTarget) and form == "indices")}
            cut |= {i.name for i in loss.inputs if isinstance(i, ClassWeights) and i.name in arrays}
            mine = {n: (v[..., start:stop] if n in cut else v) for n, v in arrays.items()}
            chosen = call.differentiable
            for reduction in ("none", "mean", "sum"):
                def objective(values_of, group=None):
                    def f(*values):
                        given = {**values_of, **dict(zip(chosen, values))}
                        out = function(**given, **kwargs, reduction=reduction, class_group=group)
                        return mx.sum(out * mx.arange(1, out.size + 1).reshape(out.shape)) if out.ndim else out
                    return f

                argnums = list(range(len(chosen)))
                want, want_grads = mx.value_and_grad(objective(arrays), argnums=argnums)(*[arrays[n] for n in chosen])
                got, grads = mx.value_and_grad(objective(mine, group), argnums=argnums)(*[mine[n] for n in chosen])
                if len(chosen) == 1:  # (MLX gives one array, not a list of one)
                    grads, want_grads = [grads], [want_grads]
                worst = error(got, want)
                for n, g, w in zip(chosen, grads, want_grads):
                    worst = max(worst, error(g, w[..., start:stop] if n in cut else w))
                yield f"{name} {variant_id(flags, form)} {reduction}", worst


def linear_cases(group, start, stop):
    """linear_cross_entropy with its head's classes split (class_group=), every option at once: the loss
    and a z-loss on the returned logsumexp, hidden's whole gradient, the head's rows of its own."""
    rng = np.random.default_rng(9)
    features = 6
    hidden = mx.array(rng.normal(size=(ROWS, features)).astype(np.float32))
    head = mx.array(rng.normal(size=(CLASSES, features)).astype(np.float32))
    bias = mx.array(rng.normal(size=(CLASSES,)).astype(np.float32))
    targets = mx.array(rng.integers(0, CLASSES, size=ROWS).astype(np.int32))
    targets[mx.array(IGNORED)] = IGNORE_INDEX
    options = {"label_smoothing": 0.1, "lse_square_scale": 1e-2, "ignore_index": IGNORE_INDEX, "softcap": 3.0,
               "reduction": "mean", "return_logsumexp": True}
    for chunk_size in (3, None):
        def objective(class_group):
            def f(h, w, b):
                loss, lse = generated.linear_cross_entropy(h, w, targets, bias=b, chunk_size=chunk_size,
                                                           class_group=class_group, **options)
                return loss + 1e-2 * mx.mean(lse**2)
            return f

        want, want_grads = mx.value_and_grad(objective(None), argnums=[0, 1, 2])(hidden, head, bias)
        got, grads = mx.value_and_grad(objective(group), argnums=[0, 1, 2])(hidden, head[start:stop], bias[start:stop])
        worst = max(error(got, want), error(grads[0], want_grads[0]), error(grads[1], want_grads[1][start:stop]),
                    error(grads[2], want_grads[2][start:stop]))
        yield f"linear_cross_entropy chunk_size={chunk_size}", worst

    # parameters given as arrays take the unfused composition: hidden's and the parameter's gradients too
    def unfused(class_group):
        def f(h, w, smoothing):
            return generated.linear_cross_entropy(h, w, targets, label_smoothing=smoothing, reduction="sum",
                                                  class_group=class_group)
        return f

    smoothing = mx.array(0.2)
    want, want_grads = mx.value_and_grad(unfused(None), argnums=[0, 1, 2])(hidden, head, smoothing)
    got, grads = mx.value_and_grad(unfused(group), argnums=[0, 1, 2])(hidden, head[start:stop], smoothing)
    yield "linear_cross_entropy label_smoothing=array", max(
        error(got, want), error(grads[0], want_grads[0]), error(grads[1], want_grads[1][start:stop]),
        error(grads[2], want_grads[2]))


def distillation_cases(group, start, stop):
    """The distillation forms with both heads' classes split alike: every array's gradient (the teacher's
    too, computed only when asked for), temperature and softcap, each reduction, chunks of 3 and the default."""
    rng = np.random.default_rng(11)
    student = [mx.array(rng.normal(size=shape).astype(np.float32))
               for shape in [(ROWS, 6), (CLASSES, 6), (CLASSES,), (ROWS, 5), (CLASSES, 5), (CLASSES,)]]
    sliced = {1, 2, 4, 5}  # the heads' rows (weights and biases) are cut along the classes
    mine = [a[start:stop] if i in sliced else a for i, a in enumerate(student)]
    for name in ("linear_kl_div_loss", "linear_jensen_shannon_divergence"):
        function = getattr(generated, name)
        for reduction, chunk_size in (("mean", 3), ("none", None), ("sum", 4)):
            def objective(class_group):
                def f(h, w, b, th, tw, tb):
                    out = function(h, w, th, tw, bias=b, teacher_bias=tb, temperature=2.0, softcap=4.0,
                                   reduction=reduction, chunk_size=chunk_size, class_group=class_group)
                    return mx.sum(out * mx.arange(1, out.size + 1).reshape(out.shape)) if out.ndim else out
                return f

            argnums = list(range(6))
            want, want_grads = mx.value_and_grad(objective(None), argnums=argnums)(*student)
            got, grads = mx.value_and_grad(objective(group), argnums=argnums)(*mine)
            worst = error(got, want)
            for i, (g, w) in enumerate(zip(grads, want_grads)):
                worst = max(worst, error(g, w[start:stop] if i in sliced else w))
            yield f"{name} {reduction} chunk_size={chunk_size}", worst

        def unfused(class_group):  # the temperature as an array: its gradient too, the unfused composition
            def f(h, w, th, tw, temperature):
                return function(h, w, th, tw, temperature=temperature, reduction="mean", class_group=class_group)
            return f

        temperature = mx.array(1.5)
        pick = [0, 1, 3, 4]
        want, want_grads = mx.value_and_grad(unfused(None), argnums=list(range(5)))(*[student[i] for i in pick], temperature)
        got, grads = mx.value_and_grad(unfused(group), argnums=list(range(5)))(*[mine[i] for i in pick], temperature)
        worst = error(got, want)
        for i, g, w in zip(pick + [None], grads, want_grads):
            worst = max(worst, error(g, w[start:stop] if i in sliced else w))
        yield f"{name} temperature=array", worst


def main():
    group = mx.distributed.init(backend="ring", strict=True)
    bounds = np.cumsum([0] + SLICES[group.size()])
    start, stop = int(bounds[group.rank()]), int(bounds[group.rank() + 1])
    errors = dict(cases(group, start, stop))
    errors.update(linear_cases(group, start, stop))
    errors.update(distillation_cases(group, start, stop))
    print(json.dumps({"rank": group.rank(), "size": group.size(), "errors": errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
