"""The distillation forms: linear_kl_div_loss and linear_jensen_shannon_divergence between two heads.

A student's head and a teacher's, neither's logits ever whole. Against a
float64 NumPy reference written here from the definitions (log_softmax of the
logits over the temperature, then KL(P || Q) or the generalized JSD), and
against the unfused composition with the generated loss: values and the
gradients of both heads' hidden states, weights and biases, compiled too, every
reduction, odd chunks; half precision to its rounding; second order, jvp and
vmap; a frozen teacher costs no memory; bad arguments named.
"""

from __future__ import annotations

import zlib

import mlx.core as mx
import numpy as np
import pytest

import generated
from tests.helpers import check_vmapped_derivatives, close_to_scale, hessian_vector_products
from generator.tools.bench_memory import peak_memory

TOKENS, FEATURES, TEACHER_FEATURES, CLASSES, CHUNK = 11, 8, 5, 29, 4  # chunks of 4, 4 and 3 tokens
LOSSES = {"kl_div_loss": {}, "jensen_shannon_divergence": {"beta": 0.3}}


def _log_softmax64(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _reference(name, zs, zt, options):
    """Each token's loss in float64, from the definitions."""
    q, p = _log_softmax64(zs), _log_softmax64(zt)
    if name == "kl_div_loss":  # KL(P || Q), P the teacher's
        return (np.exp(p) * (p - q)).sum(-1)
    beta = options["beta"]
    m = np.log(beta * np.exp(p) + (1 - beta) * np.exp(q))
    return beta * (np.exp(p) * (p - m)).sum(-1) + (1 - beta) * (np.exp(q) * (q - m)).sum(-1)


def _arrays(rng, dtype=mx.float32):
    shapes = [(TOKENS, FEATURES), (CLASSES, FEATURES), (CLASSES,), (TOKENS, TEACHER_FEATURES),
              (CLASSES, TEACHER_FEATURES), (CLASSES,)]
    return [mx.array(rng.normal(size=s).astype(np.float32)).astype(dtype) for s in shapes]


def _functions(name, options, reduction, temperature=1.0, softcap=None):
    """(fused, unfused) as functions of hidden, weight, bias, teacher_hidden, teacher_weight, teacher_bias."""
    fused_loss, loss = getattr(generated, f"linear_{name}"), getattr(generated, name)

    def fused(h, w, b, ht, wt, bt):
        return fused_loss(h, w, ht, wt, **options, reduction=reduction, bias=b, teacher_bias=bt,
                          temperature=temperature, softcap=softcap, chunk_size=CHUNK)

    def head(h, w, b):
        z = (h @ w.T + b).astype(mx.float32)
        z = z if softcap is None else softcap * mx.tanh(z / softcap)
        z = z / temperature
        return z - mx.logsumexp(z, -1, keepdims=True)

    def unfused(h, w, b, ht, wt, bt):
        return loss(head(h, w, b), head(ht, wt, bt), **options, reduction=reduction)

    return fused, unfused


def test_the_distillation_losses_have_a_linear_form():
    assert all(hasattr(generated, f"linear_{name}") for name in LOSSES)


@pytest.mark.parametrize("temperature,softcap", [(1.0, None), (2.0, None), (0.5, 3.0)])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_values_equal_a_float64_reference(name, temperature, softcap):
    rng = np.random.default_rng(zlib.crc32(f"{name} {temperature} {softcap}".encode()))
    h, w, b, ht, wt, bt = _arrays(rng)
    h64, w64, b64, ht64, wt64, bt64 = (np.asarray(a, dtype=np.float64) for a in (h, w, b, ht, wt, bt))

    def logits(h, w, b):
        z = h @ w.T + b
        return (z if softcap is None else softcap * np.tanh(z / softcap)) / temperature

    want = _reference(name, logits(h64, w64, b64), logits(ht64, wt64, bt64), LOSSES[name])
    fused, _ = _functions(name, LOSSES[name], "none", temperature, softcap)
    got = np.asarray(fused(h, w, b, ht, wt, bt))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_values_and_gradients_of_both_heads_equal_the_unfused_loss(name, reduction):
    rng = np.random.default_rng(zlib.crc32(f"{name} {reduction}".encode()))
    arrays = _arrays(rng)
    fused, unfused = _functions(name, LOSSES[name], reduction, temperature=1.5, softcap=4.0)
    objective = (lambda f: lambda *a: mx.sum(f(*a) * mx.arange(1, TOKENS + 1))) if reduction == "none" else \
        (lambda f: f)
    argnums = list(range(6))
    want_value, want_grads = mx.value_and_grad(objective(unfused), argnums=argnums)(*arrays)
    for compiled in (False, True):
        function = mx.value_and_grad(objective(fused), argnums=argnums)
        value, grads = (mx.compile(function) if compiled else function)(*arrays)
        close_to_scale(value, want_value, f"value, compiled={compiled}")
        for index, (g, want) in enumerate(zip(grads, want_grads)):
            close_to_scale(g, want, f"gradient {index}, compiled={compiled}")


@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float16])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_half_precision_equals_the_unfused_loss_to_its_rounding(name, dtype):
    arrays = _arrays(np.random.default_rng(7), dtype)
    fused, unfused = _functions(name, LOSSES[name], "mean")
    value, grads = mx.value_and_grad(fused, argnums=[0, 1, 3, 4])(*arrays)
    want_value, want_grads = mx.value_and_grad(unfused, argnums=[0, 1, 3, 4])(*arrays)
    assert value.dtype == dtype
    unit = {mx.bfloat16: 2.0**-7, mx.float16: 2.0**-10}[dtype]
    close_to_scale(value, want_value, "value", 2 * unit)
    for index, (g, want) in enumerate(zip(grads, want_grads)):
        assert g.dtype == dtype
        close_to_scale(g, want, f"gradient {index}", 4 * unit)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_second_order_jvp_and_vmap_equal_the_unfused_loss(name):
    rng = np.random.default_rng(11)
    arrays = _arrays(rng)
    fused, unfused = _functions(name, LOSSES[name], "mean", temperature=2.0)
    directions = [mx.array(rng.normal(size=a.shape).astype(np.float32)) for a in arrays]

    for index, (g, want) in enumerate(zip(hessian_vector_products(fused, arrays, directions),
                                           hessian_vector_products(unfused, arrays, directions))):
        close_to_scale(g, want, f"Hessian-vector product, argument {index}", 1e-4)
    close_to_scale(mx.jvp(fused, arrays, directions)[1][0], mx.jvp(unfused, arrays, directions)[1][0], "jvp")
    batch = mx.stack([arrays[0], 2 * arrays[0]])
    mapped = mx.vmap(lambda h: fused(h, *arrays[1:]))(batch)
    for index in range(2):
        close_to_scale(mapped[index], unfused(batch[index], *arrays[1:]), f"vmapped entry {index}")
    check_vmapped_derivatives(fused, unfused, batch, arrays[1:])


def test_a_frozen_teacher_costs_nothing_and_neither_logits_is_whole():
    # 1024 tokens x 4096 classes: each head's float32 logits are 16 MiB; a chunk's, 256 KiB.
    rng = np.random.default_rng(5)
    tokens, classes = 1024, 4096
    h, ht = (mx.array(rng.normal(size=(tokens, FEATURES)).astype(np.float32)) for _ in range(2))
    w, wt = (mx.array(rng.normal(size=(classes, FEATURES)).astype(np.float32)) for _ in range(2))
    mx.eval(h, ht, w, wt)
    logits_bytes = tokens * classes * 4

    def loss(h, w, ht, wt):
        return generated.linear_kl_div_loss(h, w, ht, wt, reduction="mean", chunk_size=16)

    returned = (h.nbytes + w.nbytes) * 2  # the student's gradients, and the float32 sum of its weight's
    assert peak_memory(mx.value_and_grad(loss, argnums=[0, 1]), [h, w, ht, wt]) < returned + logits_bytes / 2
    unfused = _functions("kl_div_loss", {}, "mean")[1]
    zeros = mx.zeros((classes,))
    assert peak_memory(mx.value_and_grad(lambda h, w, ht, wt: unfused(h, w, zeros, ht, wt, zeros), argnums=[0, 1]),
                       [h, w, ht, wt]) > 2 * logits_bytes  # the measure sees the logits where they are


def test_bad_arguments_are_named():
    h, w = mx.zeros((4, 8)), mx.zeros((10, 8))
    with pytest.raises(ValueError, match="teacher_hidden and teacher_weight must give logits shaped as"):
        generated.linear_kl_div_loss(h, w, mx.zeros((5, 3)), mx.zeros((10, 3)))
    with pytest.raises(ValueError, match="teacher_hidden and teacher_weight must give logits shaped as"):
        generated.linear_kl_div_loss(h, w, mx.zeros((4, 3)), mx.zeros((11, 3)))
    with pytest.raises(ValueError, match=r"teacher_weight must have shape \(classes, 3\)"):
        generated.linear_kl_div_loss(h, w, mx.zeros((4, 3)), mx.zeros((10, 4)))
    with pytest.raises(ValueError, match=r"(?i)temperature must be in \(0, inf\)"):
        generated.linear_kl_div_loss(h, w, mx.zeros((4, 3)), mx.zeros((10, 3)), temperature=0.0)
    with pytest.raises(ValueError, match=r"(?i)beta must be in \(0, 1\)"):
        generated.linear_jensen_shannon_divergence(h, w, mx.zeros((4, 3)), mx.zeros((10, 3)), beta=1.0)


def test_no_tokens():
    h, ht = mx.zeros((0, FEATURES)), mx.zeros((0, TEACHER_FEATURES))
    w, wt = mx.ones((CLASSES, FEATURES)), mx.ones((CLASSES, TEACHER_FEATURES))
    for name in LOSSES:
        function = getattr(generated, f"linear_{name}")
        assert function(h, w, ht, wt, reduction="none").shape == (0,)
        assert float(function(h, w, ht, wt, reduction="sum")) == 0.0
