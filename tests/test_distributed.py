"""Losses across processes: 2 and 4 real ranks of MLX's ring backend on 127.0.0.1.

Data parallel (tests/rank_data_parallel.py): each rank holds uneven rows of
one batch, with rows an ignore_index drops unevenly spread; its loss with
``group=`` and its gradients must equal, to float32 rounding, the loss of the
whole batch in one process and that loss's gradients in its rows, for every
loss, mean and sum, and for the linear_ forms (their head's gradient combined
by sum_gradients). Classes split (tests/rank_class_split.py): each rank holds an
uneven slice of the class axis (one rank none); every row-wise loss, variant,
target form and reduction with ``class_group=`` must equal the loss of the
whole rows, and its gradient the slice of theirs. The launcher
(tests/ranks.py) itself is checked too: a failing rank stops the launch at
once, and a launch that hangs is killed at its timeout.
"""

from __future__ import annotations

import json
import time

import mlx.core as mx
import numpy as np
import pytest

import generated
from tests.arguments import LOSSES
from tests.ranks import RanksFailed, run_ranks

TOLERANCE = 1e-5  # float32 rounding, relative to the values' scale: the ranks add in another order


@pytest.mark.parametrize("world", [2, 4])
def test_every_rank_equals_one_process_on_the_whole_batch(world):
    outputs = run_ranks("tests.rank_data_parallel", world, timeout=120)
    reports = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    assert [r["rank"] for r in reports] == list(range(world)) and {r["size"] for r in reports} == {world}
    cases = {f"{name} {reduction}" for name in LOSSES for reduction in ("mean", "sum")}
    cases |= {"linear_cross_entropy mean", "linear_kl_div_loss mean", "linear_cpo_loss mean", "ctc_loss mean",
              "ctc_loss sum", "cross_entropy mean under vmap"}
    for report in reports:
        assert set(report["errors"]) == cases
        wrong = {case: e for case, e in report["errors"].items() if not e <= TOLERANCE}
        assert not wrong, f"rank {report['rank']} of {world}: {wrong}"


@pytest.mark.parametrize("world", [2, 4])
def test_classes_split_across_ranks_give_the_loss_of_whole_rows(world):
    outputs = run_ranks("tests.rank_class_split", world, timeout=120)
    reports = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    rowwise = [name for name, loss in LOSSES.items() if loss.kind == "rowwise"]
    for report in reports:
        assert {case.split()[0] for case in report["errors"]} == set(rowwise) | {"linear_cross_entropy", "linear_kl_div_loss",
                                                                            "linear_jensen_shannon_divergence"}
        assert len(report["errors"]) >= 3 * len(rowwise)  # every variant and form, three reductions
        wrong = {case: e for case, e in report["errors"].items() if not e <= TOLERANCE}
        assert not wrong, f"rank {report['rank']} of {world}: {wrong}"


def test_classes_split_over_one_process_and_their_second_derivative():
    group = mx.distributed.init()  # a group of this process alone: the split is the whole row
    rng = np.random.default_rng(2)
    logits = mx.array(rng.normal(size=(6, 5)).astype(np.float32))
    targets = mx.array(rng.integers(0, 5, size=6).astype(np.int32))

    def loss(x, class_group=None):
        return generated.cross_entropy(x, targets, reduction="mean", label_smoothing=0.1, class_group=class_group)

    value, grad = mx.value_and_grad(lambda x: loss(x, group))(logits)
    want_value, want_grad = mx.value_and_grad(loss)(logits)
    np.testing.assert_allclose(value, want_value, rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-6, atol=1e-7)
    with pytest.raises(NotImplementedError, match="second derivatives of a loss whose classes are split"):
        mx.eval(mx.grad(lambda x: mx.sum(mx.grad(lambda y: loss(y, group))(x) ** 2))(logits))


def test_a_mean_of_per_rank_means_would_fail_the_check():
    # What the ranks' check would see if the loss took each rank's mean and the ranks averaged them
    # (mlx.nn.average_gradients' rule): with 3 and 7 rows, 3 of 3 and 1 of 7 ignored, it is off.
    rng = np.random.default_rng(0)
    logits = mx.array(rng.normal(size=(10, 5)).astype(np.float32))
    targets = mx.array([-100, -100, -100, 1, 2, 3, 4, -100, 0, 1])
    whole = generated.cross_entropy(logits, targets, reduction="mean", ignore_index=-100)
    means = [generated.cross_entropy(logits[a:b], targets[a:b], reduction="mean", ignore_index=-100)
             for a, b in ((0, 3), (3, 10))]
    per_rank = (mx.nan_to_num(means[0]) + means[1]) / 2  # a rank that keeps no row: its mean is NaN
    assert abs(float(per_rank) - float(whole)) > 100 * TOLERANCE * abs(float(whole))


def test_one_process_is_a_group_of_one():
    group = mx.distributed.init()  # no backend configured: a group of this process alone
    rng = np.random.default_rng(1)
    logits = mx.array(rng.normal(size=(6, 4)).astype(np.float32))
    targets = mx.array(rng.integers(0, 4, size=6).astype(np.int32))
    for reduction in ("none", "mean", "sum"):
        alone = generated.cross_entropy(logits, targets, reduction=reduction)
        assert np.allclose(generated.cross_entropy(logits, targets, reduction=reduction, group=group), alone)
    gradients = {"w": mx.ones((2,))}
    assert generated.sum_gradients(gradients, group) is gradients


def test_a_group_must_be_a_group():
    with pytest.raises(ValueError, match="group must be None or an mx.distributed.Group"):
        generated.mse_loss(mx.zeros(3), mx.zeros(3), group=2)
    with pytest.raises(ValueError, match="class_group must be None or an mx.distributed.Group"):
        generated.cross_entropy(mx.zeros((2, 3)), mx.zeros((2,), dtype=mx.int32), class_group="all")


def test_the_launcher_stops_every_rank_when_one_fails():
    start = time.monotonic()
    with pytest.raises(RanksFailed, match="exited with status"):
        run_ranks("tests.rank_exits", 2, "fail-before-init", timeout=60)
    assert time.monotonic() - start < 30  # the other rank, waiting in init, was killed


def test_the_launcher_kills_a_launch_past_its_timeout():
    start = time.monotonic()
    with pytest.raises(RanksFailed, match="timeout"):
        run_ranks("tests.rank_exits", 2, "hang", timeout=3)
    assert time.monotonic() - start < 20


@pytest.mark.parametrize("head", ["replicated", "split"])
def test_the_example_trains_across_two_processes_as_one_process_does(head, capsys):
    from examples import train_across_processes

    arguments = ["--steps", "6", "--report-every", "3", "--head", head]
    outputs = run_ranks("examples.train_across_processes", 2, *arguments, timeout=120)
    finals = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    assert all("own rows" in out and "global" in out for out in outputs)
    assert train_across_processes.main(arguments) == 0
    alone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for final in finals:
        assert final["body"] == finals[0]["body"]  # the ranks' bodies stay the same
        np.testing.assert_allclose(final["body"], alone["body"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(final["loss"], alone["loss"], rtol=1e-5)
    # each class's head row from the rank holding it: split, each class held by one rank (unevenly)
    held = [c for final in finals for c in range(*final["classes"])]
    every = list(range(train_across_processes.CLASSES))
    assert sorted(held) == (every if head == "split" else sorted(every * 2))
    for final in finals:
        np.testing.assert_allclose(final["head"], alone["head"][slice(*final["classes"])], rtol=1e-5, atol=1e-5)
