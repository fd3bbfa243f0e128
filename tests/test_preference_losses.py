"""Preference losses (specs with Sequence inputs) and their linear_ forms, against the papers.

The oracles are written here from each paper (and TRL's / Liger's code of
them), once for float64 NumPy (the values) and torch (the torch extra: the
gradients, by autograd): the loss of the sequences' log-probabilities, and,
for the linear_ forms, the whole composition from the hidden states (logits,
log-softmax, the labels' log-probabilities summed or averaged over the kept
tokens, the loss, the chosen tokens' NLL). The
robustness tests over every spec (tests/arguments.py) cover the plain forms
too: half precision, extreme values, bad inputs, kernels.
"""

from __future__ import annotations

from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest

import generated
from generator.tools.bench_memory import peak_memory
from tests.helpers import close_to_scale, hessian_vector_products

try:
    import torch
    F = torch.nn.functional
except ImportError:  # the NumPy oracles still run
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch (the test extra) is not installed")

# The functions the papers' formulas use, in each library: float64 NumPy, and torch where it is installed.
NUMPY = SimpleNamespace(logsigmoid=lambda z: -np.logaddexp(0.0, -z), relu=lambda z: np.maximum(z, 0.0),
                        sigmoid=lambda z: 1 / (1 + np.exp(-z)), log1p=np.log1p, exp=np.exp, where=np.where)
TORCH = torch and SimpleNamespace(logsigmoid=F.logsigmoid, relu=torch.relu, sigmoid=torch.sigmoid, log1p=torch.log1p,
                                  exp=torch.exp, where=torch.where)

IGNORE = -100
# the losses of the reference model's log-probabilities too
REFERENCED = ["dpo_loss", "dpo_hinge_loss", "ipo_loss", "robust_dpo_loss", "apo_zero_loss", "sppo_hard_loss",
              "nca_pair_loss"]
AVERAGED = {"ipo_loss", "simpo_loss", "orpo_loss"}  # of mean token log-probabilities
PARAMS = {  # not the defaults, so that each parameter is seen
    "dpo_loss": {"beta": 0.3, "label_smoothing": 0.1},
    "dpo_hinge_loss": {"beta": 0.7},
    "ipo_loss": {"beta": 0.4},
    "simpo_loss": {"beta": 2.0, "gamma": 0.3, "label_smoothing": 0.2},
    "cpo_loss": {"beta": 0.5, "label_smoothing": 0.1},
    "orpo_loss": {"beta": 0.2},
    "robust_dpo_loss": {"beta": 0.3, "label_smoothing": 0.2},
    "apo_zero_loss": {"beta": 0.3},
    "sppo_hard_loss": {"beta": 0.4},
    "nca_pair_loss": {"beta": 0.3},
}
NLL_BY_DEFAULT = {"cpo_loss", "orpo_loss"}  # Liger's compute_nll_loss defaults


def paper_loss(name, params, chosen, rejected, ref_chosen=None, ref_rejected=None, lib=TORCH):
    """Each pair's loss, from the papers, in ``lib`` (float64 arrays)."""
    beta = params["beta"]
    smoothing = params.get("label_smoothing", 0.0)

    def smoothed(z):  # cDPO (Mitchell 2023): the preference flipped with probability ``smoothing``
        return -(1 - smoothing) * lib.logsigmoid(z) - smoothing * lib.logsigmoid(-z)

    if name in REFERENCED:
        ratio = (chosen - rejected) - (ref_chosen - ref_rejected)
        chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
        if name == "dpo_loss":  # Rafailov 2023, eq. 7
            return smoothed(beta * ratio)
        if name == "robust_dpo_loss":  # Chowdhury 2024, eq. 7, as TRL's robust
            return (-(1 - smoothing) * lib.logsigmoid(beta * ratio)
                    + smoothing * lib.logsigmoid(-beta * ratio)) / (1 - 2 * smoothing)
        if name == "apo_zero_loss":  # D'Oosterlinck 2024, eq. 7
            return 1 - lib.sigmoid(beta * chosen_ratio) + lib.sigmoid(beta * rejected_ratio)
        if name == "sppo_hard_loss":  # Wu 2024, eq. 4.7, the winner's probability 1
            return (chosen_ratio - 0.5 / beta) ** 2 + (rejected_ratio + 0.5 / beta) ** 2
        if name == "nca_pair_loss":  # Chen 2024, as TRL's nca_pair
            return (-lib.logsigmoid(beta * chosen_ratio) - 0.5 * lib.logsigmoid(-beta * chosen_ratio)
                    - 0.5 * lib.logsigmoid(-beta * rejected_ratio))
        if name == "dpo_hinge_loss":  # SLiC (Zhao 2023), as TRL's hinge
            return lib.relu(1 - beta * ratio)
        return (ratio - 1 / (2 * beta)) ** 2  # IPO (Azar 2023), eq. 17
    if name == "simpo_loss":  # Meng 2024, eq. 6
        return smoothed(beta * (chosen - rejected) - params["gamma"])
    if name == "cpo_loss":  # Xu 2024, eq. 3 (its preference term)
        return smoothed(beta * (chosen - rejected))
    # ORPO (Hong 2024), eq. 7-8: log odds(p) = log p - log(1 - p), p the mean token probability
    log_odds = lambda logp: logp - lib.log1p(-lib.exp(logp))
    return -beta * lib.logsigmoid(log_odds(chosen) - log_odds(rejected))


def reduced(losses, reduction):
    return losses.mean() if reduction == "mean" else losses.sum() if reduction == "sum" else losses


def _inputs(name, rng, batch=7):
    """The log-probabilities (float64): sums over a few tokens, or means (ORPO's in (-inf, 0))."""
    logps = lambda: -rng.uniform(0.05, 3.0, size=batch) * (1 if name in AVERAGED else 12)
    arrays = {"chosen_logps": logps(), "rejected_logps": logps()}
    if name in REFERENCED:
        arrays |= {"ref_chosen_logps": logps(), "ref_rejected_logps": logps()}
    return arrays


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_each_preference_loss_is_the_papers_in_float64_numpy(reduction):
    for name in sorted(PARAMS):
        arrays = _inputs(name, np.random.default_rng(20 + sorted(PARAMS).index(name)))
        want = reduced(paper_loss(name, PARAMS[name], *arrays.values(), lib=NUMPY), reduction)
        got = getattr(generated, name)(*(mx.array(v.astype(np.float32)) for v in arrays.values()), **PARAMS[name],
                                       reduction=reduction)
        close_to_scale(got, mx.array(np.asarray(want, dtype=np.float32)), f"{name} {reduction}")
    rng = np.random.default_rng(30)
    policy, ref, desirable, kl = -rng.uniform(1, 30, 9), -rng.uniform(1, 30, 9), rng.integers(0, 2, 9) == 1, 0.3
    want = reduced(kto_paper(policy, ref, desirable, kl, lib=NUMPY), reduction)
    got = generated.kto_loss(*(mx.array(a.astype(np.float32)) for a in (policy, ref, desirable)), kl, **KTO,
                             reduction=reduction)
    close_to_scale(got, mx.array(np.asarray(want, dtype=np.float32)), f"kto_loss {reduction}")


@needs_torch
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name", sorted(PARAMS))
def test_each_preference_loss_and_its_gradients_are_the_papers(name, reduction):
    rng = np.random.default_rng(sorted(PARAMS).index(name))
    arrays = _inputs(name, rng)
    params = PARAMS[name]
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items()}
    want = reduced(paper_loss(name, params, *tensors.values()), reduction)
    want.sum().backward()
    loss = getattr(generated, name)
    names = list(arrays)

    def ours(*values):
        return loss(*values, **params, reduction=reduction).sum()

    values = [mx.array(v.astype(np.float32)) for v in arrays.values()]
    got = loss(*values, **params, reduction=reduction)
    close_to_scale(got, mx.array(want.detach().numpy()), f"{name} {reduction}")
    grads = mx.grad(ours, argnums=list(range(len(values))))(*values)
    for key, grad in zip(names, grads):
        close_to_scale(grad, mx.array(tensors[key].grad.numpy()), f"{name} {reduction}: gradient of {key}")


# ------------------------------------------------------------------ the linear_ forms

BATCH, CHOSEN_TOKENS, REJECTED_TOKENS, FEATURES, CLASSES = 3, 5, 7, 8, 37


def _sequences(rng, dtype=np.float32, empty=True):
    """Hidden states and labels of chosen and rejected sequences of different lengths: a prompt's tokens
    ignored, and (``empty``) one rejected sequence with every token ignored: its log-probability is 0, the
    sum or the mean of none (ORPO's odds of a probability of 1 are infinite: not for it)."""
    chosen = rng.normal(size=(BATCH, CHOSEN_TOKENS, FEATURES)).astype(dtype)
    rejected = rng.normal(size=(BATCH, REJECTED_TOKENS, FEATURES)).astype(dtype)
    chosen_labels = rng.integers(0, CLASSES, size=(BATCH, CHOSEN_TOKENS))
    rejected_labels = rng.integers(0, CLASSES, size=(BATCH, REJECTED_TOKENS))
    chosen_labels[:, :2] = IGNORE
    rejected_labels[:, :1] = IGNORE
    if empty:
        rejected_labels[1] = IGNORE
    weight = rng.normal(scale=0.5, size=(CLASSES, FEATURES)).astype(dtype)
    bias = rng.normal(size=(CLASSES,)).astype(dtype)
    return chosen, rejected, weight, bias, chosen_labels, rejected_labels


def _composition(name, params, labels, refs, reduction, nll_weight):
    """The loss from the hidden states, in float64 torch: log_softmax of the logits, the labels'
    log-probabilities over the kept tokens, summed (or averaged, 0 for none), the loss, the chosen tokens' NLL."""
    def log_probs(hidden, weight, bias, labels_of):
        logits = hidden @ weight.T + bias
        kept = torch.tensor(labels_of != IGNORE)
        token = torch.log_softmax(logits, -1).gather(-1, torch.tensor(np.where(labels_of == IGNORE, 0, labels_of))[..., None])
        token = torch.where(kept, token[..., 0], 0.0)
        total = token.sum(-1)
        if name in AVERAGED:
            total = total / kept.sum(-1).clamp(min=1)
        return total, -token[kept].mean()

    def loss(chosen, rejected, weight, bias, *ref):
        chosen_logps, nll = log_probs(chosen, weight, bias, labels[0])
        rejected_logps, _ = log_probs(rejected, weight, bias, labels[1])
        value = reduced(paper_loss(name, params, chosen_logps, rejected_logps, *ref), reduction)
        return value + nll_weight * nll if nll_weight else value
    return loss


@needs_torch
@pytest.mark.parametrize("nll", [False, True])
@pytest.mark.parametrize("name", sorted(PARAMS))
def test_each_linear_form_is_the_composition_from_hidden_states(name, nll):
    """Values and gradients (hidden states, head, bias, the reference's log-probabilities) against float64,
    chunks of 4 tokens and blocks of 8 classes (sizes no multiple of them)."""
    rng = np.random.default_rng(10 + sorted(PARAMS).index(name))
    chosen, rejected, weight, bias, chosen_labels, rejected_labels = _sequences(rng, empty=name != "orpo_loss")
    refs = [-rng.uniform(1, 10, size=BATCH) for _ in range(2)] if name in REFERENCED else []
    params, alpha = PARAMS[name], 0.7
    reduction = "sum" if nll else "mean"
    oracle = _composition(name, params, (chosen_labels, rejected_labels), refs, reduction, alpha if nll else 0.0)
    tensors = [torch.tensor(a.astype(np.float64), requires_grad=True) for a in (chosen, rejected, weight, bias, *refs)]
    want = oracle(*tensors)
    want.backward()

    def ours(c, r, w, b, *ref):
        return getattr(generated, f"linear_{name}")(c, r, w, mx.array(chosen_labels), mx.array(rejected_labels), *ref,
                                                    **params, reduction=reduction, bias=b, chunk_size=4,
                                                    class_chunk_size=8, compute_nll_loss=nll, alpha=alpha)

    arrays = [mx.array(a.astype(np.float32)) for a in (chosen, rejected, weight, bias, *refs)]
    for how, function in [("as called", ours), ("compiled", mx.compile(ours))]:
        got, grads = mx.value_and_grad(function, argnums=list(range(len(arrays))))(*arrays)
        close_to_scale(got, mx.array(want.detach().numpy()), f"linear_{name} {how}")
        for what, grad, tensor in zip(["chosen_hidden", "rejected_hidden", "weight", "bias", "ref_chosen", "ref_rejected"],
                                      grads, tensors):
            close_to_scale(grad, mx.array(tensor.grad.numpy()), f"linear_{name} {how}: gradient of {what}")


def test_the_nll_term_is_on_by_default_where_liger_has_it():
    """compute_nll_loss's default: on for CPO and ORPO (their SFT term), off for the others."""
    rng = np.random.default_rng(3)
    chosen, rejected, weight, _, chosen_labels, rejected_labels = _sequences(rng, empty=False)
    for name in sorted(PARAMS):
        refs = [mx.array(-rng.uniform(1, 10, size=BATCH).astype(np.float32)) for _ in range(2)] if name in REFERENCED else []
        call = lambda **options: getattr(generated, f"linear_{name}")(
            mx.array(chosen), mx.array(rejected), mx.array(weight), mx.array(chosen_labels), mx.array(rejected_labels),
            *refs, **options)
        default, without, with_nll = call(), call(compute_nll_loss=False), call(compute_nll_loss=True)
        assert (default.item() == with_nll.item()) == (name in NLL_BY_DEFAULT), name
        assert (default.item() == without.item()) == (name not in NLL_BY_DEFAULT), name
        assert with_nll.item() > without.item(), name  # the chosen tokens' cross entropy is positive


def test_half_precision_heads_sum_each_sequence_in_float32():
    """bfloat16 hidden states and head: each sequence's log-probability is the float32 sum of the logits the
    bfloat16 matmul rounds, as the unfused composition in float32 would make it (not a bfloat16 sum)."""
    rng = np.random.default_rng(4)
    chosen, rejected, weight, _, chosen_labels, rejected_labels = _sequences(rng)
    chosen, rejected, weight = (mx.array(a).astype(mx.bfloat16) for a in (chosen, rejected, weight))

    def log_probs(hidden, labels):  # our own unfused cross entropy on the rounded logits, in float32
        losses = generated.cross_entropy((hidden @ weight.T).astype(mx.float32), mx.array(labels), ignore_index=IGNORE)
        return -mx.sum(losses, axis=-1)

    want = generated.cpo_loss(log_probs(chosen, chosen_labels), log_probs(rejected, rejected_labels))
    got = generated.linear_cpo_loss(chosen, rejected, weight, mx.array(chosen_labels), mx.array(rejected_labels),
                                    compute_nll_loss=False, chunk_size=4)
    assert got.dtype == mx.float32
    close_to_scale(got, want, "linear_cpo_loss bfloat16")


def test_second_order_through_the_linear_form_is_the_unfused_compositions():
    """grad of grad (Hessian-vector products in every array) of linear_dpo_loss equals that of the same loss
    made from the logits whole (the generated cross_entropy, MLX's autodiff of the rest)."""
    rng = np.random.default_rng(5)
    chosen, rejected, weight, bias, chosen_labels, rejected_labels = _sequences(rng)
    refs = [mx.array(-rng.uniform(1, 10, size=BATCH).astype(np.float32)) for _ in range(2)]
    labels = mx.array(chosen_labels), mx.array(rejected_labels)

    def fused(c, r, w, b):
        return generated.linear_dpo_loss(c, r, w, *labels, *refs, bias=b, chunk_size=4, class_chunk_size=8)

    def unfused(c, r, w, b):
        logps = [-mx.sum(generated.cross_entropy(h @ w.T + b, t, ignore_index=IGNORE), axis=-1)
                 for h, t in zip((c, r), labels)]
        return generated.dpo_loss(*logps, *refs)

    arrays = [mx.array(a) for a in (chosen, rejected, weight, bias)]
    directions = [mx.array(rng.normal(size=a.shape).astype(np.float32)) for a in arrays]
    for got, want, what in zip(hessian_vector_products(fused, arrays, directions),
                               hessian_vector_products(unfused, arrays, directions),
                               ["chosen_hidden", "rejected_hidden", "weight", "bias"]):
        close_to_scale(got, want, f"second order in {what}", 1e-4)


def test_the_linear_form_never_holds_the_logits():
    """At 2 x (2 x 128) tokens and 16384 classes the float32 logits are 32 MiB, and as much again their
    gradient: linear_dpo_loss's value_and_grad holds less than a quarter of them at its peak (above the inputs
    and the gradients it returns)."""
    batch, tokens, features, classes = 2, 128, 16, 16384
    rng = np.random.default_rng(6)
    hidden = [mx.array(rng.normal(size=(batch, tokens, features)).astype(np.float32)) for _ in range(2)]
    weight = mx.array(rng.normal(scale=0.1, size=(classes, features)).astype(np.float32))
    labels = [mx.array(rng.integers(0, classes, size=(batch, tokens))) for _ in range(2)]
    refs = [mx.zeros((batch,)) for _ in range(2)]
    step = mx.value_and_grad(lambda c, r, w: generated.linear_dpo_loss(c, r, w, *labels, *refs), argnums=[0, 1, 2])
    returned = sum(a.nbytes for a in (*hidden, weight))
    logits = 2 * batch * tokens * classes * 4
    assert peak_memory(step, [*hidden, weight]) - returned < logits / 4


def test_bad_sequences_name_the_argument():
    rng = np.random.default_rng(7)
    chosen, rejected, weight, _, chosen_labels, rejected_labels = (mx.array(a) for a in _sequences(rng))
    refs = [mx.zeros((BATCH,))] * 2
    call = lambda c=chosen, r=rejected, cl=chosen_labels, rl=rejected_labels, **options: generated.linear_dpo_loss(
        c, r, weight, cl, rl, *refs, **options)
    with pytest.raises(ValueError, match="chosen_labels must have the shape of chosen_hidden"):
        call(cl=chosen_labels[:, :-1])
    with pytest.raises(ValueError, match="rejected_labels must be integer class indices"):
        call(rl=rejected_labels.astype(mx.float32))
    with pytest.raises(ValueError, match="rejected_labels must have the batch shape of chosen_labels"):
        call(r=rejected[:2], rl=rejected_labels[:2])
    with pytest.raises(ValueError, match="rejected_hidden must have the features of chosen_hidden"):
        call(r=rejected[..., :3])
    with pytest.raises(ValueError, match="chosen_hidden must have a tokens axis"):
        call(c=chosen[0, 0], cl=chosen_labels[0, 0])
    with pytest.raises(ValueError, match="Compute nll loss adds one number"):
        call(compute_nll_loss=True, reduction="none")
    with pytest.raises(ValueError, match="Alpha"):
        call(alpha=-1.0)
    with pytest.raises(ValueError, match="Ignore index"):
        call(ignore_index=0.5)


# ------------------------------------------------------------------ KTO: unpaired completions

KTO = {"beta": 0.4, "desirable_weight": 1.3, "undesirable_weight": 0.8}


def kto_paper(policy, ref, desirable, kl, lib=TORCH):
    """Ethayarajh 2024, eq. 8, as TRL's kto_loss: each completion by its label (a bool array), desirable or not."""
    ratio = policy - ref
    desirable = torch.tensor(desirable) if lib is TORCH else desirable
    return lib.where(desirable, KTO["desirable_weight"] * (1 - lib.sigmoid(KTO["beta"] * (ratio - kl))),
                     KTO["undesirable_weight"] * (1 - lib.sigmoid(KTO["beta"] * (kl - ratio))))


@needs_torch
@pytest.mark.parametrize("kl_shape", ["one number", "one per completion"])
def test_kto_and_its_gradients_are_the_papers(kl_shape):
    rng = np.random.default_rng(8)
    policy, ref = -rng.uniform(1, 30, size=9), -rng.uniform(1, 30, size=9)
    desirable = rng.integers(0, 2, size=9).astype(bool)
    kl = np.array(0.3) if kl_shape == "one number" else rng.uniform(0, 1, size=9)
    tensors = [torch.tensor(policy, requires_grad=True), torch.tensor(ref, requires_grad=True)]
    want = kto_paper(*tensors, desirable, torch.tensor(kl)).mean()
    want.backward()
    arrays = [mx.array(a.astype(np.float32)) for a in (policy, ref)]
    labels, reference_point = mx.array(desirable.astype(np.float32)), mx.array(kl.astype(np.float32))
    ours = lambda p, r: generated.kto_loss(p, r, labels, reference_point, **KTO)
    got, grads = mx.value_and_grad(ours, argnums=[0, 1])(*arrays)
    close_to_scale(got, mx.array(want.detach().numpy()), "kto_loss")
    for what, grad, tensor in zip(["policy_logps", "ref_logps"], grads, tensors):
        close_to_scale(grad, mx.array(tensor.grad.numpy()), f"kto_loss: gradient of {what}")


@needs_torch
def test_linear_kto_is_the_composition_from_hidden_states():
    rng = np.random.default_rng(9)
    hidden, _, weight, bias, labels, _ = _sequences(rng)
    ref, desirable, kl = -rng.uniform(1, 10, size=BATCH), np.array([True, False, True]), 0.2
    tensors = [torch.tensor(a.astype(np.float64), requires_grad=True) for a in (hidden, weight, bias)]
    logits = tensors[0] @ tensors[1].T + tensors[2]
    kept = torch.tensor(labels != IGNORE)
    token = torch.log_softmax(logits, -1).gather(-1, torch.tensor(np.where(kept.numpy(), labels, 0))[..., None])[..., 0]
    want = kto_paper(torch.where(kept, token, 0.0).sum(-1), torch.tensor(ref), desirable, kl).mean()
    want.backward()

    def ours(h, w, b):
        return generated.linear_kto_loss(h, w, mx.array(labels), mx.array(ref.astype(np.float32)),
                                         mx.array(desirable.astype(np.float32)), kl, **KTO, bias=b, chunk_size=4)

    got, grads = mx.value_and_grad(ours, argnums=[0, 1, 2])(*(mx.array(a) for a in (hidden, weight, bias)))
    close_to_scale(got, mx.array(want.detach().numpy()), "linear_kto_loss")
    for what, grad, tensor in zip(["policy_hidden", "weight", "bias"], grads, tensors):
        close_to_scale(grad, mx.array(tensor.grad.numpy()), f"linear_kto_loss: gradient of {what}")


def test_a_label_outside_the_classes_or_a_nan_feature_makes_its_pair_nan_alone():
    """As the cross entropy's: a label outside [0, classes) that is not ignore_index gives its token, so its
    sequence and its pair, a NaN loss and NaN gradients; the other pairs keep theirs. A NaN feature too."""
    rng = np.random.default_rng(11)
    chosen, rejected, weight, _, chosen_labels, rejected_labels = (mx.array(a) for a in _sequences(rng, empty=False))
    refs = [mx.zeros((BATCH,))] * 2
    outside = mx.array(np.where(np.arange(BATCH)[:, None] == 1, CLASSES, np.asarray(chosen_labels)))  # pair 1's
    nan_feature = mx.where(mx.arange(BATCH)[:, None, None] == 2, mx.nan, rejected)  # pair 2's
    for what, c, r, labels in [("label", chosen, rejected, outside), ("feature", chosen, nan_feature, chosen_labels)]:
        bad = 1 if what == "label" else 2
        loss = lambda c, r: generated.linear_dpo_loss(c, r, weight, labels, rejected_labels, *refs, reduction="none")
        values = loss(c, r)
        grad = mx.grad(lambda c, r: loss(c, r).sum())(c, r)
        assert np.isnan(np.asarray(values)).tolist() == [i == bad for i in range(BATCH)], what
        kept_tokens = np.asarray(labels) != IGNORE
        assert np.isnan(np.asarray(grad))[bad][kept_tokens[bad]].all(), what
        assert np.isfinite(np.asarray(grad))[np.arange(BATCH) != bad].all(), what
