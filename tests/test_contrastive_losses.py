"""Contrastive losses (specs with Contrastive inputs) and their linear_ forms, against the papers.

The oracles are written here from the papers (and open_clip's /
info-nce-pytorch's code), in float64 NumPy (the values) and torch with
autograd (the gradients; the torch extra): the batch-by-batch similarity
matrix made whole, the cross entropy of its rows (and of its columns, for
CLIP) against the diagonal. The robustness tests over every spec cover the
plain forms (the losses of given log-probabilities) too.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import generated
from generator.tools.bench_memory import peak_memory
from tests.helpers import close_to_scale, hessian_vector_products

try:
    import torch
    F = torch.nn.functional
except ImportError:  # the NumPy oracle still runs
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch (the test extra) is not installed")

BATCH, FEATURES = 13, 8  # chunks of 4 queries, blocks of 5 keys: neither divides the batch


def clip_paper(images, texts, logit_scale, reduction):
    """Radford 2021, fig. 3: the symmetric cross entropy of the scaled similarities."""
    logits = logit_scale * images @ texts.T
    labels = torch.arange(len(logits))
    return (F.cross_entropy(logits, labels, reduction=reduction) + F.cross_entropy(logits.T, labels, reduction=reduction)) / 2


def info_nce_paper(query, keys, temperature, reduction):
    """van den Oord 2018, eq. 4, as info-nce-pytorch: cosine similarities over the temperature, in-batch negatives."""
    logits = F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(logits)), reduction=reduction)


def nt_xent_paper(first, second, temperature, reduction):
    """Chen 2020 (SimCLR), alg. 1: the cosine similarities of both views over the temperature, each
    embedding's own left out, the other view of its example the positive; each example's two losses averaged."""
    z = F.normalize(torch.cat([first, second]), dim=-1)
    logits = (z @ z.T / temperature).masked_fill(torch.eye(len(z), dtype=torch.bool), -torch.inf)
    batch = len(first)
    losses = F.cross_entropy(logits, torch.cat([torch.arange(batch) + batch, torch.arange(batch)]), reduction="none")
    pairs = (losses[:batch] + losses[batch:]) / 2
    return pairs.mean() if reduction == "mean" else pairs.sum() if reduction == "sum" else pairs


CASES = {  # the linear_ form, its oracle, its scale
    "clip_loss": (lambda *a, **k: generated.linear_clip_loss(*a, **k), clip_paper, 2.7),
    "info_nce_loss": (lambda *a, **k: generated.linear_info_nce_loss(*a, **k), info_nce_paper, 0.3),
    "nt_xent_loss": (lambda *a, **k: generated.linear_nt_xent_loss(*a, **k), nt_xent_paper, 0.2),
}


def _rows_cross_entropy(logits):
    """Each row's cross entropy against its diagonal, float64 NumPy."""
    top = logits.max(axis=-1, keepdims=True)
    return (top[:, 0] + np.log(np.exp(logits - top).sum(axis=-1))) - np.diagonal(logits)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_each_linear_form_is_the_papers_loss_in_float64_numpy(reduction):
    rng = np.random.default_rng(7)
    a, b = (rng.normal(size=(BATCH, FEATURES)) for _ in range(2))
    normalized = [x / np.linalg.norm(x, axis=-1, keepdims=True) for x in (a, b)]
    logits = 2.7 * a @ b.T
    both = np.concatenate(normalized)
    similarities = both @ both.T / 0.2
    np.fill_diagonal(similarities, -np.inf)  # Chen 2020: an embedding is not its own negative
    positives = np.concatenate([np.arange(BATCH) + BATCH, np.arange(BATCH)])
    nt_xent = np.log(np.exp(similarities).sum(axis=-1)) - similarities[np.arange(2 * BATCH), positives]
    wants = {"clip_loss": (_rows_cross_entropy(logits) + _rows_cross_entropy(logits.T)) / 2,  # Radford 2021
             "info_nce_loss": _rows_cross_entropy(normalized[0] @ normalized[1].T / 0.3),  # van den Oord 2018
             "nt_xent_loss": (nt_xent[:BATCH] + nt_xent[BATCH:]) / 2}
    for name, want in wants.items():
        linear, _, scale = CASES[name]
        got = linear(mx.array(a.astype(np.float32)), mx.array(b.astype(np.float32)), scale, reduction=reduction,
                     chunk_size=4, class_chunk_size=5)
        want = want.mean() if reduction == "mean" else want.sum() if reduction == "sum" else want
        close_to_scale(got, mx.array(np.asarray(want, dtype=np.float32)), f"linear_{name} {reduction}")


@needs_torch
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_each_linear_form_is_the_papers_loss_of_the_similarities(name, reduction):
    """Values and gradients in both embeddings and in the scale given as an array (learnt), as called and
    compiled, against float64."""
    linear, paper, scale = CASES[name]
    rng = np.random.default_rng(sorted(CASES).index(name))
    queries, keys = (rng.normal(size=(BATCH, FEATURES)) for _ in range(2))
    tensors = [torch.tensor(a, requires_grad=True) for a in (queries, keys, np.array(scale))]
    want = paper(*tensors, reduction)
    want.sum().backward()

    def ours(q, k, s):
        return linear(q, k, s, reduction=reduction, chunk_size=4, class_chunk_size=5)

    arrays = [mx.array(a.astype(np.float32)) for a in (queries, keys, np.array(scale))]
    for how, function in [("as called", ours), ("compiled", mx.compile(ours))]:
        got = function(*arrays)
        close_to_scale(got, mx.array(want.detach().numpy()), f"linear_{name} {reduction} {how}")
        grads = mx.grad(lambda *a: function(*a).sum(), argnums=[0, 1, 2])(*arrays)
        for what, grad, tensor in zip(["queries", "keys", "scale"], grads, tensors):
            close_to_scale(grad, mx.array(tensor.grad.numpy()), f"linear_{name} {reduction} {how}: gradient of {what}")


def test_second_order_through_linear_clip_is_the_unfused_compositions():
    """grad of grad of linear_clip_loss equals that of the loss of the similarity matrix made whole (the
    generated cross_entropy both ways, MLX's autodiff of the rest)."""
    rng = np.random.default_rng(3)
    arrays = [mx.array(rng.normal(size=(BATCH, FEATURES)).astype(np.float32)) for _ in range(2)]

    def fused(images, texts):
        return generated.linear_clip_loss(images, texts, 2.0, chunk_size=4, class_chunk_size=5)

    def unfused(images, texts):
        logits, labels = 2.0 * images @ texts.T, mx.arange(BATCH)
        return (generated.cross_entropy(logits, labels, reduction="mean")
                + generated.cross_entropy(logits.T, labels, reduction="mean")) / 2

    directions = [mx.array(rng.normal(size=a.shape).astype(np.float32)) for a in arrays]
    for got, want, what in zip(hessian_vector_products(fused, arrays, directions),
                               hessian_vector_products(unfused, arrays, directions), ["images", "texts"]):
        close_to_scale(got, want, f"second order in {what}", 1e-4)


def test_half_precision_embeddings_give_float32_losses_of_the_rounded_similarities():
    rng = np.random.default_rng(4)
    images, texts = (mx.array(rng.normal(size=(BATCH, FEATURES)).astype(np.float32)).astype(mx.bfloat16)
                     for _ in range(2))
    got = generated.linear_clip_loss(images, texts, 2.0, chunk_size=4)
    logits, labels = ((2.0 * images) @ texts.T).astype(mx.float32), mx.arange(BATCH)
    want = (generated.cross_entropy(logits, labels, reduction="mean")
            + generated.cross_entropy(((2.0 * texts) @ images.T).astype(mx.float32), labels, reduction="mean")) / 2
    assert got.dtype == mx.float32
    close_to_scale(got, want, "linear_clip_loss bfloat16")


def test_the_linear_form_never_holds_the_similarities():
    """At a batch of 4096 the float32 similarities are 64 MiB, each way, and as much again their gradient:
    linear_clip_loss's value_and_grad in chunks of 128 queries holds less than a quarter of one of them at
    its peak (above the inputs and the gradients it returns; 8 MiB when measured)."""
    batch, features = 4096, 32
    rng = np.random.default_rng(5)
    arrays = [mx.array(rng.normal(size=(batch, features)).astype(np.float32)) for _ in range(2)]
    step = mx.value_and_grad(lambda a, b: generated.linear_clip_loss(a, b, 10.0, chunk_size=128), argnums=[0, 1])
    returned = sum(a.nbytes for a in arrays)
    assert peak_memory(step, arrays) - returned < batch * batch * 4 / 4


def test_bad_embeddings_name_the_argument():
    images, texts = mx.zeros((4, 3)), mx.zeros((4, 3))
    with pytest.raises(ValueError, match="text_embeds must have the shape of image_embeds"):
        generated.linear_clip_loss(images, texts[:3])
    with pytest.raises(ValueError, match=r"image_embeds must be \(batch, features\)"):
        generated.linear_clip_loss(images[0], texts[0])
    with pytest.raises(ValueError, match="Temperature"):
        generated.linear_info_nce_loss(images, texts, temperature=0.0)
    with pytest.raises(ValueError, match="must have a floating-point dtype"):
        generated.linear_clip_loss(images.astype(mx.int32), texts)


def test_nt_xent_never_holds_the_similarities_of_both_views():
    """At a batch of 2048 the float32 similarities of both views are 2N x 2N, 64 MiB (and as much their
    gradient): linear_nt_xent_loss's value_and_grad in chunks of 128 holds less than a quarter of them (9 MiB
    when measured: the backward on blocks of the keys, each query's own similarity left out in its block)."""
    batch, features = 2048, 32
    rng = np.random.default_rng(6)
    arrays = [mx.array(rng.normal(size=(batch, features)).astype(np.float32)) for _ in range(2)]
    step = mx.value_and_grad(lambda a, b: generated.linear_nt_xent_loss(a, b, 0.5, chunk_size=128), argnums=[0, 1])
    returned = sum(a.nbytes for a in arrays)
    assert peak_memory(step, arrays) - returned < (2 * batch) ** 2 * 4 / 4
