"""ctc_loss, the recurrence construct's loss, against oracles written here from the paper.

* float64 NumPy: the definition (every frame-by-frame labelling that collapses
  to the targets, summed; tiny sizes) and the paper's alpha recursion (any size);
* float64 central differences of that recursion for the gradient;
* MLX's autodiff of the spec's step run state by state in plain MLX operations
  (the "symbolic form"), for every transformation: grad, grad of grad, jvp,
  jvp of grad, vmap, compile;
* torch's ctc_loss (the test extra), values and gradients through log_softmax.

torch's own gradient in the log-probabilities is not the derivative of its loss
(it adds ``exp(log_probs)``, as if the log-probabilities were logits to a
log_softmax); through a log_softmax both are the same, which is how they meet.
"""

from __future__ import annotations

import itertools
import math

import mlx.core as mx
import numpy as np
import pytest

from generated import ctc_loss
from tests.helpers import build_package, close_to_scale

try:
    import torch
except ImportError:  # the test extra
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch (the test extra) is not installed")


# ---------------------------------------------------------------- oracles

def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def collapse(path, blank):
    """The paper's B: repeats merged, then blanks removed."""
    merged = [c for i, c in enumerate(path) if i == 0 or c != path[i - 1]]
    return [c for c in merged if c != blank]


def ctc_by_definition(log_probs, labels, blank=0):
    """Minus the log of the summed probability of every labelling of the frames that collapses to ``labels``."""
    frames, classes = log_probs.shape
    scores = [sum(log_probs[t, c] for t, c in enumerate(path))
              for path in itertools.product(range(classes), repeat=frames) if collapse(path, blank) == list(labels)]
    return -np.logaddexp.reduce(scores) if scores else math.inf


def ctc_by_recursion(log_probs, labels, blank=0):
    """The paper's alpha recursion in log space, float64, one sequence of ``(frames, classes)``."""
    states = [blank]
    for label in labels:
        states += [label, blank]
    frames, width = len(log_probs), len(states)
    if frames == 0:
        return 0.0 if not len(labels) else math.inf
    alpha = np.full(width, -np.inf)
    alpha[0] = log_probs[0, blank]
    if width > 1:
        alpha[1] = log_probs[0, states[1]]
    for t in range(1, frames):
        new = np.full(width, -np.inf)
        for s in range(width):
            terms = [alpha[s]] + ([alpha[s - 1]] if s >= 1 else [])
            if s >= 2 and states[s] != blank and states[s] != states[s - 2]:
                terms.append(alpha[s - 2])
            new[s] = np.logaddexp.reduce(terms) + log_probs[t, states[s]]
        alpha = new
    return -np.logaddexp.reduce(alpha[-2:] if width > 1 else alpha[-1:])


def reference(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False):
    """float64 losses of a padded batch ``(frames, sequences, classes)``, reduced as torch does."""
    losses = np.array([ctc_by_recursion(log_probs[:input_lengths[n], n], targets[n][:target_lengths[n]], blank)
                       for n in range(log_probs.shape[1])])
    if zero_infinity:
        losses = np.where(np.isinf(losses), 0.0, losses)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return (losses / np.maximum(np.asarray(target_lengths), 1)).mean()


def spec_step_by_states(log_probs, targets, input_lengths, target_lengths, blank=0):
    """The spec's step run state by state in plain MLX operations, for MLX's autodiff (every order).

    Its log-semiring sum is finite in its derivatives where both terms are -inf (as MLX's is not).
    """
    def add(a, b):
        none = (a == -math.inf) & (b == -math.inf)
        return mx.where(none, -math.inf, mx.logaddexp(mx.where(none, 0.0, a), mx.where(none, 0.0, b)))

    losses = []
    for n in range(log_probs.shape[1]):
        states = [blank]
        for label in targets[n][:target_lengths[n]]:
            states += [int(label), blank]
        emissions = mx.take(log_probs[:, n, :], mx.array(states), axis=1)
        alpha = [emissions[0, s] if s < 2 else mx.array(-math.inf) for s in range(len(states))]
        for t in range(1, input_lengths[n]):
            alpha = [emissions[t, s] + (add(add(alpha[s], alpha[s - 1]) if s >= 1 else alpha[s],
                                            alpha[s - 2]) if s >= 2 and states[s] not in (blank, states[s - 2])
                                        else add(alpha[s], alpha[s - 1]) if s >= 1 else alpha[s])
                     for s in range(len(states))]
        losses.append(-(add(alpha[-1], alpha[-2]) if len(states) > 1 else alpha[-1]))
    return mx.stack(losses)


# ---------------------------------------------------------------- cases

def batch(rng, frames=12, count=5, classes=6, width=4, blank=0):
    """Log-probabilities and padded targets of sequences of different lengths: a sequence without labels,
    repeated labels (no skip between them), one with as few frames as its labels need, padding of -1."""
    log_probs = log_softmax(rng.normal(size=(frames, count, classes)) * 2)
    others = [c for c in range(classes) if c != blank]
    targets = rng.choice(others, size=(count, width))
    targets[1, :3] = targets[1, 0]  # repeats
    target_lengths = [width, 3, 0, 2, width][:count] + [width] * max(0, count - 5)
    input_lengths = [frames, frames - 3, frames - 1, 3, 2 * width + 1][:count] + [frames] * max(0, count - 5)
    for n, length in enumerate(target_lengths):
        targets[n, length:] = -1  # padding: never read
    return log_probs, targets, input_lengths, target_lengths


def ours(log_probs, targets, input_lengths, target_lengths, dtype=mx.float32, **options):
    return ctc_loss(mx.array(log_probs).astype(dtype), mx.array(targets), mx.array(input_lengths),
                    mx.array(target_lengths), **options)


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("blank", [0, 2])
def test_the_recursion_oracle_is_the_definition(blank):
    """The float64 recursion the other tests lean on equals the paper's definition, every labelling summed."""
    rng = np.random.default_rng(0)
    for labels in ([1], [1, 1], [1, 3], [3, 1, 3], []):
        labels = [c if c != blank else 0 for c in labels]
        for frames in (1, 2, 3, 5):
            log_probs = log_softmax(rng.normal(size=(frames, 4)))
            assert np.isclose(ctc_by_recursion(log_probs, labels, blank), ctc_by_definition(log_probs, labels, blank),
                              rtol=1e-12)


@pytest.mark.parametrize("blank", [0, 5])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_values_equal_the_paper_in_float64(reduction, blank):
    rng = np.random.default_rng(1)
    arrays = batch(rng, blank=blank)
    got = ours(*arrays, blank=blank, reduction=reduction)
    close_to_scale(got, mx.array(reference(*arrays, blank=blank, reduction=reduction)), f"{reduction}", 3e-6)
    assert got.dtype == mx.float32


def test_the_definition_at_tiny_sizes_every_labelling():
    rng = np.random.default_rng(2)
    log_probs = log_softmax(rng.normal(size=(5, 3, 3)))
    targets = np.array([[1, 2], [2, 2], [1, 0]])
    got = np.array(ours(log_probs, targets, [5, 5, 4], [2, 2, 1], reduction="none"))
    want = [ctc_by_definition(log_probs[:5, 0], [1, 2]), ctc_by_definition(log_probs[:5, 1], [2, 2]),
            ctc_by_definition(log_probs[:4, 2], [1])]
    assert np.allclose(got, want, rtol=2e-6)


def test_targets_one_after_another_and_one_sequence_unbatched():
    rng = np.random.default_rng(3)
    log_probs, targets, input_lengths, target_lengths = batch(rng)
    padded = ours(log_probs, targets, input_lengths, target_lengths, reduction="none")
    joined = np.concatenate([targets[n, :length] for n, length in enumerate(target_lengths)])
    concatenated = ctc_loss(mx.array(log_probs), mx.array(joined), tuple(input_lengths), list(target_lengths),
                            reduction="none")
    assert np.array_equal(np.array(padded), np.array(concatenated))
    one = ctc_loss(mx.array(log_probs[:input_lengths[0], 0]), mx.array(targets[0]), input_lengths[0],
                   target_lengths[0], reduction="none")
    assert one.shape == () and np.isclose(one.item(), padded[0].item(), rtol=1e-6)


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_half_precision_is_float32_math_on_the_rounded_inputs(dtype):
    rng = np.random.default_rng(4)
    log_probs, *rest = batch(rng)
    rounded = np.array(mx.array(log_probs).astype(dtype).astype(mx.float32), dtype=np.float64)
    got = ours(log_probs, *rest, dtype=dtype, reduction="none")
    assert got.dtype == dtype
    eps = {mx.float16: 2 ** -11, mx.bfloat16: 2 ** -8}[dtype]
    want = reference(rounded, *rest, reduction="none")
    assert np.allclose(np.array(got.astype(mx.float32)), want, rtol=eps, atol=0)
    grad = mx.grad(lambda x: ctc_loss(x, *map(mx.array, rest), reduction="sum"))(mx.array(log_probs).astype(dtype))
    assert grad.dtype == dtype
    full = mx.grad(lambda x: ctc_loss(x, *map(mx.array, rest), reduction="sum"))(mx.array(rounded, dtype=mx.float32))
    assert np.allclose(np.array(grad.astype(mx.float32)), np.array(full), rtol=eps, atol=eps * 1e-3)


# ---------------------------------------------------------------- gradients

def central_differences(function, x, step=1e-6):
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += step
        down[index] -= step
        grad[index] = (function(up) - function(down)) / (2 * step)
    return grad


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gradient_equals_float64_central_differences(reduction):
    rng = np.random.default_rng(5)
    log_probs, *rest = batch(rng, frames=8, count=4, classes=4, width=3)
    weights = rng.normal(size=4) if reduction == "none" else None  # a cotangent per sequence
    total = (lambda v: v @ weights) if weights is not None else (lambda v: v)
    want = central_differences(lambda x: total(reference(x, *rest, reduction=reduction)), log_probs)
    got = mx.grad(lambda x: mx.sum(ctc_loss(x, *map(mx.array, rest), reduction=reduction)
                                   * (mx.array(weights, dtype=mx.float32) if weights is not None else 1.0)))(
        mx.array(log_probs, dtype=mx.float32))
    assert np.allclose(np.array(got), want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_every_transformation_equals_autodiff_of_the_spec_step():
    rng = np.random.default_rng(6)
    log_probs, targets, input_lengths, target_lengths = batch(rng, frames=8, count=4, classes=5, width=3)
    x = mx.array(log_probs, dtype=mx.float32)
    args = (mx.array(targets), mx.array(input_lengths), mx.array(target_lengths))
    fused = lambda v: ctc_loss(v, *args, reduction="none")
    plain = lambda v: spec_step_by_states(v, targets, input_lengths, target_lengths)
    cotangent = mx.array(rng.normal(size=4), dtype=mx.float32)
    direction = mx.array(rng.normal(size=x.shape), dtype=mx.float32)
    loss_of = lambda f: (lambda v: mx.sum(f(v) * cotangent))

    close_to_scale(fused(x), plain(x), "value")
    close_to_scale(mx.grad(loss_of(fused))(x), mx.grad(loss_of(plain))(x), "grad")
    close_to_scale(mx.value_and_grad(loss_of(fused))(x)[1], mx.grad(loss_of(plain))(x), "value_and_grad")
    close_to_scale(mx.compile(mx.grad(loss_of(fused)))(x), mx.grad(loss_of(plain))(x), "compiled grad")
    close_to_scale(mx.jvp(fused, [x], [direction])[1][0], mx.jvp(plain, [x], [direction])[1][0], "jvp")
    hessian = lambda f: mx.grad(lambda v: mx.sum(mx.grad(loss_of(f))(v) * direction))(x)
    close_to_scale(hessian(fused), hessian(plain), "grad of grad")
    # jvp of the gradient: the Hessian along the direction (symmetric), MLX's own jvp of a gather's vjp missing
    close_to_scale(mx.jvp(mx.grad(loss_of(fused)), [x], [direction])[1][0], hessian(plain), "jvp of grad")
    stacked = mx.stack([x, x * 1.5])
    close_to_scale(mx.vmap(fused)(stacked), mx.stack([plain(x), plain(x * 1.5)]), "vmap")
    each = mx.stack([mx.grad(loss_of(plain))(x), mx.grad(loss_of(plain))(x * 1.5)])
    close_to_scale(mx.grad(lambda v: mx.sum(mx.vmap(fused)(v) * cotangent))(stacked), each, "grad of vmap")
    close_to_scale(mx.vmap(mx.grad(loss_of(fused)))(stacked), each, "vmap of grad")
    # per-example gradients differentiated again (their vmap rules: the scatter into the classes had none)
    directions = mx.stack([direction, -2 * direction])
    along = lambda f: lambda v: mx.sum(mx.vmap(mx.grad(loss_of(f)))(v) * directions)
    close_to_scale(mx.grad(along(fused))(stacked), mx.grad(along(plain))(stacked), "grad of vmap of grad")


def test_vmap_maps_targets_and_lengths_too():
    """The labels and lengths are the custom function's arguments: MLX's vmap maps them, the gradient too."""
    rng = np.random.default_rng(16)
    log_probs, targets, input_lengths, target_lengths = batch(rng, frames=10, count=4, classes=5, width=3)
    x = mx.array(log_probs, dtype=mx.float32)
    other = np.where(targets > 0, targets % 4 + 1, targets)
    many = mx.stack([x, x]), mx.array(np.stack([targets, other])), mx.array(np.stack([input_lengths, [10, 9, 8, 7]]))
    loss = lambda v, t, i: ctc_loss(v, t, i, mx.array(target_lengths), reduction="sum")
    got, grads = mx.vmap(mx.value_and_grad(loss))(*many)
    for k in range(2):
        want, want_grad = mx.value_and_grad(loss)(*(a[k] for a in many))
        close_to_scale(got[k], want, f"vmap value {k}")
        close_to_scale(grads[k], want_grad, f"vmap gradient {k}")
    close_to_scale(mx.grad(lambda v: mx.vmap(loss)(v, *many[1:]).sum())(many[0]), grads, "grad of vmap")


# ---------------------------------------------------------------- torch

@needs_torch
@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_values_and_gradients_equal_torch_through_log_softmax(reduction, zero_infinity):
    rng = np.random.default_rng(7)
    _, targets, input_lengths, target_lengths = batch(rng, frames=12, count=6)
    target_lengths[5], input_lengths[5] = 4, 3  # too few frames: an infinite loss
    logits = rng.normal(size=(12, 6, 6)) * 2
    z = torch.tensor(logits, requires_grad=True)
    want = torch.nn.functional.ctc_loss(z.log_softmax(-1), torch.tensor(np.where(targets < 0, 1, targets)),
                                        torch.tensor(input_lengths), torch.tensor(target_lengths),
                                        reduction=reduction, zero_infinity=zero_infinity)
    cotangent = rng.normal(size=want.shape)
    (want * torch.tensor(cotangent)).sum().backward()

    def loss(v):
        log_probs = v - mx.logsumexp(v, axis=-1, keepdims=True)
        return ctc_loss(log_probs, mx.array(targets), mx.array(input_lengths), mx.array(target_lengths),
                        reduction=reduction, zero_infinity=zero_infinity)

    _, grad = mx.value_and_grad(lambda v: mx.sum(loss(v) * mx.array(cotangent, dtype=mx.float32)))(
        mx.array(logits, dtype=mx.float32))
    value, expected_value = np.array(loss(mx.array(logits, dtype=mx.float32))), want.detach().numpy()
    finite = np.isfinite(expected_value)
    assert np.array_equal(value[~finite], expected_value[~finite])  # inf where torch's is (too few frames)
    assert np.allclose(value[finite], expected_value[finite], rtol=3e-6)
    expected = z.grad.numpy()
    if not zero_infinity:  # the infinite loss's gradient is NaN in its frames, alike; the rest compared
        assert np.array_equal(np.isnan(np.array(grad)).any(axis=(0, 2)), np.isnan(expected).any(axis=(0, 2)))
        keep = ~np.isnan(expected).any(axis=(0, 2))
        grad, expected = np.array(grad)[:, keep], expected[:, keep]
    close_to_scale(mx.array(grad), mx.array(expected), "gradient", 3e-6)


# ---------------------------------------------------------------- adversarial

def test_a_nan_frame_or_a_label_outside_the_classes_makes_that_sequence_nan_alone():
    rng = np.random.default_rng(8)
    log_probs, targets, input_lengths, target_lengths = batch(rng)
    log_probs[2, 0, :] = np.nan  # read by sequence 0
    log_probs[11, 3, :] = np.nan  # after sequence 3's last frame: never read
    targets[1, 0] = 6  # one past the classes
    targets[4, 1] = -3
    got = ours(log_probs, targets, input_lengths, target_lengths, reduction="none")
    assert np.array_equal(np.isnan(np.array(got)), [True, True, False, False, True])
    grad = mx.grad(lambda x: mx.sum(mx.where(mx.isnan(ctc_loss(x, *map(mx.array, (targets, input_lengths, target_lengths)),
                                                                    reduction="none")), 0.0, 1.0) * ctc_loss(
        x, *map(mx.array, (targets, input_lengths, target_lengths)), reduction="none")))(mx.array(log_probs))
    assert not np.isnan(np.array(grad)[:, [2, 3]]).any()  # the others' gradients untouched


def test_impossible_alignments_are_infinite_and_zero_infinity_zeroes_them_and_their_gradient():
    rng = np.random.default_rng(9)
    log_probs = log_softmax(rng.normal(size=(6, 3, 4)))
    log_probs[:, 2, 1] = -np.inf  # a masked class: sequence 2's label can never be emitted
    targets = np.array([[1, 1, 2], [1, 2, 3], [1, 3, 3]])
    lengths = ([3, 3, 6], [3, 3, 2])  # sequence 0 needs 4 frames for "1 1 2" (a blank between the repeats)
    x = mx.array(log_probs, dtype=mx.float32)
    plain = ours(log_probs, targets, *lengths, reduction="none")
    assert np.isinf(np.array(plain)[[0, 2]]).all() and np.isfinite(np.array(plain)[1])
    zeroed = lambda v: ctc_loss(v, mx.array(targets), *map(mx.array, lengths), reduction="sum", zero_infinity=True)
    assert np.isclose(zeroed(x).item(), np.array(plain)[1], rtol=1e-6)
    grad = np.array(mx.grad(zeroed)(x))
    assert np.all(grad[:, [0, 2]] == 0) and np.isfinite(grad).all() and np.abs(grad[:, 1]).max() > 0


def test_extreme_log_probabilities_stay_exact():
    """-1e30 (a class all but masked) and offsets far from 0 are summed in log space, never exponentiated."""
    rng = np.random.default_rng(10)
    log_probs, targets, input_lengths, target_lengths = batch(rng)
    log_probs[:, :, 3] = -1e30
    got = ours(log_probs, targets, input_lengths, target_lengths, reduction="none")
    want = reference(log_probs, targets, input_lengths, target_lengths, reduction="none")
    assert np.array_equal(np.isinf(np.array(got)), np.isinf(want))
    assert np.allclose(np.array(got), want, rtol=3e-6)
    shifted = ours(log_probs - 1e4, targets, input_lengths, target_lengths, reduction="none")  # not normalised
    frames_read = np.array(input_lengths)
    assert np.allclose(np.array(shifted), want + 1e4 * frames_read, rtol=1e-6)


def test_lengths_out_of_range_given_as_arrays_make_nan_and_as_lists_raise():
    rng = np.random.default_rng(11)
    log_probs, targets, input_lengths, target_lengths = batch(rng)
    got = ours(log_probs, targets, [13, 5, -1, 3, 9], [4, 5, 0, 2, 4], reduction="none")
    assert np.array_equal(np.isnan(np.array(got)), [True, True, True, False, False])
    with pytest.raises(ValueError, match=r"Input_lengths must be in \[0, 12\].*got 13 for sequence 0"):
        ctc_loss(mx.array(log_probs), mx.array(targets), [13, 5, 1, 3, 9], target_lengths)
    with pytest.raises(ValueError, match=r"Target_lengths must be in \[0, 4\].*got 5"):
        ctc_loss(mx.array(log_probs), mx.array(targets), input_lengths, (4, 5, 0, 2, 4))


def test_targets_one_after_another_need_the_lengths_values():
    """Inside mx.compile the lengths of 1-d targets are not known as an array: a list works, an array is named."""
    log_probs, targets = mx.zeros((6, 2, 4)) - math.log(4), mx.array([1, 2, 3])
    compiled = mx.compile(lambda x: ctc_loss(x, targets, [6, 6], [2, 1]))
    assert np.isclose(compiled(log_probs).item(), ctc_loss(log_probs, targets, [6, 6], [2, 1]).item())
    with pytest.raises(ValueError, match="1-d targets .* need target_lengths' values here"):
        mx.compile(lambda x, lengths: ctc_loss(x, targets, [6, 6], lengths))(log_probs, mx.array([2, 1]))


def test_empty_batches_and_no_frames():
    none = ctc_loss(mx.zeros((5, 0, 3)), mx.zeros((0, 2), mx.int32), mx.zeros((0,), mx.int32),
                    mx.zeros((0,), mx.int32), reduction="none")
    assert none.shape == (0,)
    assert ctc_loss(mx.zeros((5, 0, 3)), mx.zeros((0, 2), mx.int32), [], [], reduction="sum").item() == 0
    # no frames: one empty path for no labels (loss 0), none for a label (inf), as torch
    got = ctc_loss(mx.zeros((0, 2, 3)), mx.array([[1], [1]]), [0, 0], [0, 1], reduction="none")
    assert np.array_equal(np.array(got), [0.0, np.inf])


@pytest.mark.parametrize("call,message", [
    (lambda a: ctc_loss(a["lp"].astype(mx.int32), a["t"], a["il"], a["tl"]), "Log_probs must have a floating"),
    (lambda a: ctc_loss(a["lp"][0, 0], a["t"], a["il"], a["tl"]), r"log_probs must be \(frames, sequences, classes\)"),
    (lambda a: ctc_loss(a["lp"], a["t"].astype(mx.float32), a["il"], a["tl"]), "Targets must have an integer dtype"),
    (lambda a: ctc_loss(a["lp"], a["t"][:2], a["il"], a["tl"]), "Targets must have one row per sequence"),
    (lambda a: ctc_loss(a["lp"], a["t"], a["il"][:2], a["tl"]), r"Input_lengths must have one length per sequence"),
    (lambda a: ctc_loss(a["lp"], a["t"], a["il"].astype(mx.float32), a["tl"]), "Input_lengths must have an integer"),
    (lambda a: ctc_loss(a["lp"], a["t"], [1.5, 2, 3, 4, 5], a["tl"]), "Input_lengths must be an array, list or tuple"),
    (lambda a: ctc_loss(a["lp"], a["t"], a["il"], a["tl"], blank=6), r"Blank must be a class of log_probs, in \[0, 6\)"),
    (lambda a: ctc_loss(a["lp"], a["t"], a["il"], a["tl"], blank=-1), r"Blank must be in \[0, inf\), got -1"),
    (lambda a: ctc_loss(a["lp"], a["t"], a["il"], a["tl"], reduction="max"), "reduction"),
    (lambda a: ctc_loss(a["lp"], a["t"], a["il"], a["tl"], zero_infinity=1), "Zero infinity must be True or False"),
    (lambda a: ctc_loss(a["lp"], a["t"].reshape(-1)[:7], a["il"], [2, 2, 2, 2, 2]), "summing to their 7"),
])
def test_bad_arguments_are_named(call, message):
    log_probs, targets, input_lengths, target_lengths = batch(np.random.default_rng(12))
    arrays = {"lp": mx.array(log_probs), "t": mx.array(targets), "il": mx.array(input_lengths),
              "tl": mx.array(target_lengths)}
    with pytest.raises(ValueError, match=message):
        call(arrays)


# ---------------------------------------------------------------- the construct, beyond CTC

MONOTONIC = '''
"""A monotonic alignment without blanks: each frame stays on its label (at a cost) or moves on to the next."""
from sympy import oo
from generator.spec import *

stay = Param("stay", -0.5, range="(-inf, 0]", doc="Log-weight of staying on a label.")
paths = Alignment("log_probs", "targets", "input_lengths", "target_lengths")
step = paths.emission + logaddexp(paths.previous(0) + stay, paths.previous(1))
spec = Loss("monotonic_loss", inputs=paths.inputs, params=[stay], reduction="sum",
            recurrence=paths.recurrence(step, start=[0], end=[-1]))
'''


def monotonic_by_definition(log_probs, labels, stay):
    """Every path of frames onto the labels in order (each at least once), each stay weighted, summed."""
    frames = len(log_probs)
    scores = []
    for moves in itertools.product((0, 1), repeat=frames - 1):
        path = np.concatenate([[0], np.cumsum(moves)]).astype(int)
        if path[-1] == len(labels) - 1:
            scores.append(sum(log_probs[t, labels[s]] for t, s in enumerate(path)) + stay * (frames - 1 - sum(moves)))
    return -np.logaddexp.reduce(scores) if scores else math.inf


def test_another_recurrence_spec_is_compiled_with_its_derived_backward(tmp_path):
    """A spec of the construct other than CTC's (no separator, a weighted move) against its definition; its
    gradient, through the backward the generator derived, against central differences of that definition."""
    package = build_package(tmp_path, {"monotonic_loss": MONOTONIC})
    rng = np.random.default_rng(13)
    log_probs = log_softmax(rng.normal(size=(6, 3, 5)))
    targets, input_lengths, target_lengths = np.array([[1, 4, 2], [3, 3, 0], [2, 0, 0]]), [6, 5, 4], [3, 2, 1]
    arrays = lambda x: (x, mx.array(targets), mx.array(input_lengths), mx.array(target_lengths))
    stay = -0.7

    def definition(x):
        return sum(monotonic_by_definition(x[:input_lengths[n], n], targets[n, :target_lengths[n]], stay)
                   for n in range(3))

    got = package.monotonic_loss(*arrays(mx.array(log_probs, dtype=mx.float32)), stay=stay)
    assert np.isclose(got.item(), definition(log_probs), rtol=2e-6)
    grad = mx.grad(lambda x: package.monotonic_loss(*arrays(x), stay=stay))(mx.array(log_probs, dtype=mx.float32))
    want = central_differences(definition, log_probs)
    assert np.allclose(np.array(grad), want, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="Stay must be a number"):
        package.monotonic_loss(*arrays(mx.array(log_probs)), stay=mx.array(-0.5))  # not differentiated: refused


# ---------------------------------------------------------------- kernels

@pytest.fixture
def emulated(monkeypatch):
    from generated import _gpu
    from tests.metal_shim import harness

    kernels = harness.EmulatedKernels()
    monkeypatch.setattr(mx.fast, "metal_kernel", kernels.metal_kernel)
    monkeypatch.setattr(mx.fast, "cuda_kernel", kernels.cuda_kernel)
    _gpu._built.clear()
    yield _gpu
    _gpu.set_backend(None)
    _gpu._built.clear()


@pytest.mark.parametrize("backend", ["metal", "cuda"])
def test_the_kernels_give_the_mlx_path_s_values_and_gradients(backend, emulated):
    """The forward and backward kernels (every frame in one launch; the exact source MLX builds, on the CPU
    emulator, threads in both orders) against the MLX path: values, gradients, the NaN and inf pattern."""
    rng = np.random.default_rng(14)
    log_probs, targets, input_lengths, target_lengths = batch(rng, frames=10, count=6, classes=5, width=4, blank=4)
    log_probs[3, 0, :] = np.nan  # a NaN frame
    targets[4, 0] = 9  # a label outside the classes
    input_lengths[5], target_lengths[5] = 2, 3  # too few frames: inf
    arrays = (mx.array(targets), mx.array(input_lengths), mx.array(target_lengths))
    cotangent = mx.array(rng.normal(size=6), dtype=mx.float32)

    def run(name, zero_infinity):
        emulated.set_backend(name)
        loss = lambda x: ctc_loss(x, *arrays, blank=4, reduction="none", zero_infinity=zero_infinity)
        value, grad = mx.value_and_grad(lambda x: mx.sum(mx.where(mx.isnan(loss(x)), 0.0, loss(x) * cotangent)))(
            mx.array(log_probs, dtype=mx.float32))
        return loss(mx.array(log_probs, dtype=mx.float32)), grad

    for zero_infinity in (False, True):
        (got, got_grad), (want, want_grad) = run(backend, zero_infinity), run("mlx", zero_infinity)
        for a, b in ((got, want), (got_grad, want_grad)):
            a, b = np.array(a), np.array(b)
            assert np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(np.isinf(a), np.isinf(b))
            finite = np.isfinite(b)
            assert np.allclose(a[finite], b[finite], rtol=1e-5, atol=1e-6)
    assert {k[0] for k in emulated._built} == {backend}  # both kernels ran
    assert len(emulated._built) == 2


def test_nvcc_compiles_the_kernels(monkeypatch):
    """The CUDA source MLX would build for both kernels compiles with nvcc (warnings as errors)."""
    from generated import _gpu
    from tests.metal_shim import harness

    if harness.NVCC is None:
        pytest.skip("nvcc is not installed")
    kernels = harness.EmulatedKernels(execute=False)  # record the sources only
    monkeypatch.setattr(mx.fast, "cuda_kernel", kernels.cuda_kernel)
    _gpu._built.clear()
    _gpu.set_backend("cuda")
    try:
        log_probs, *rest = batch(np.random.default_rng(15))
        mx.eval(mx.grad(lambda x: ctc_loss(x, *map(mx.array, rest)))(mx.array(log_probs, dtype=mx.float32)))
    finally:
        _gpu.set_backend(None)
        _gpu._built.clear()
    sources = [text for backend, _, text, _, _ in kernels.launches if backend == "cuda"]
    assert len(sources) == 2
    harness.nvcc_compile(sources)
