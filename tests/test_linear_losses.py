"""The linear_ forms: a class loss of ``hidden @ weight.T + bias``, never holding the logits.

Every row-wise loss of logits over classes has one. Against the unfused
composition, ``<loss>(hidden @ weight.T + bias, ...)`` with the generated loss
(itself checked against float64 references elsewhere), on odd sizes (tokens
and classes not multiples of the chunk), with each option: values and the
gradients of hidden, weight, bias and the per-token weights to float32
rounding; the same under ``mx.compile``; half precision to its rounding;
second order, jvp and vmap exact; bad arguments named; and the logits never
whole (peak memory below one float32 copy of them).
"""

from __future__ import annotations

import zlib

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import generated
from generated import _linear
from tests.arguments import LOSSES
from tests.helpers import build_package, check_vmapped_derivatives, close_to_scale, hessian_vector_products
from generator.tools.bench_memory import peak_memory

TOKENS, FEATURES, CLASSES, CHUNK = 13, 8, 37, 4  # chunks of 4, 4, 4 and 1 tokens

# Per loss: the options to try (beyond the defaults), and the head's names.
OPTIONS = {
    "cross_entropy": [{}, {"label_smoothing": 0.1, "lse_square_scale": 1e-2}, {"ignore_index": 3},
                      {"probabilities": True}, {"weights": True}],
    "softmax_focal_loss": [{}, {"gamma": 0.5}, {"alpha": True}],
    "poly1_cross_entropy": [{}, {"epsilon": -0.5}, {"weights": True}],
    "multi_margin_loss": [{}, {"p": 2, "margin": 0.5}, {"weight": True}],
    "multiclass_hinge_loss": [{}],
    "multiclass_perceptron_loss": [{}],
}
HEADS = {"multi_margin_loss": ("head_weight", "head_bias")}
LABELS = {"multiclass_hinge_loss": "labels", "multiclass_perceptron_loss": "labels"}  # optax's name of the targets
DISTILLATION = ["jensen_shannon_divergence", "kl_div_loss"]  # tests/test_linear_distillation.py
PREFERENCE = sorted(name for name, loss in LOSSES.items() if loss.sequences)  # tests/test_preference_losses.py
CONTRASTIVE = sorted(name for name, loss in LOSSES.items() if loss.contrastives)  # tests/test_contrastive_losses.py
LINEAR = sorted(name[len("linear_"):] for name in generated.__all__
                if name.startswith("linear_") and name[len("linear_"):] not in DISTILLATION + PREFERENCE + CONTRASTIVE)


def test_every_class_loss_of_logits_has_a_linear_form():
    assert LINEAR == sorted(OPTIONS)
    others = sorted(name[len("linear_"):] for name in generated.__all__ if name.startswith("linear_"))
    assert sorted(set(others) - set(LINEAR)) == sorted(DISTILLATION + PREFERENCE + CONTRASTIVE)
    assert CONTRASTIVE == ["clip_loss", "info_nce_loss", "nt_xent_loss"]
    assert PREFERENCE == ["apo_zero_loss", "cpo_loss", "dpo_hinge_loss", "dpo_loss", "ipo_loss",
                          "kto_loss", "nca_pair_loss", "orpo_loss", "robust_dpo_loss", "simpo_loss", "sppo_hard_loss"]


def _arrays(name, options, rng, dtype=mx.float32):
    """(hidden, weight, bias, the loss's other keyword arguments)."""
    hidden = mx.array(rng.normal(size=(TOKENS, FEATURES)).astype(np.float32)).astype(dtype)
    weight = mx.array(rng.normal(scale=0.5, size=(CLASSES, FEATURES)).astype(np.float32)).astype(dtype)
    bias = mx.array(rng.normal(size=(CLASSES,)).astype(np.float32)).astype(dtype)
    options = dict(options)
    if options.pop("probabilities", False):
        z = rng.normal(size=(TOKENS, CLASSES))
        targets = mx.array((np.exp(z) / np.exp(z).sum(-1, keepdims=True)).astype(np.float32))
    else:
        targets = mx.array(rng.integers(0, CLASSES, size=TOKENS).astype(np.int32))
        if "ignore_index" in options:
            targets = mx.where(mx.arange(TOKENS) % 4 == 1, options["ignore_index"], targets)
    for key in ("weights", "alpha", "weight"):
        if options.pop(key, False):
            size = TOKENS if key == "weights" else CLASSES
            options[key] = mx.array(rng.uniform(0.5, 1.5, size=size).astype(np.float32))
    return hidden, weight, bias, {"targets": targets, **options}


def _functions(name, kwargs, reduction, softcap=None, class_chunk_size=None):
    """(fused, unfused) as functions of hidden, weight, bias (and the per-token weights, if given).

    ``class_chunk_size``: the fused backward's blocks of classes, where the loss's backward runs on tiles
    (every loss's, every option). By default, at these sizes, a tile is every class of one token; with
    blocks of 5, a tile is 5 classes of 7 tokens (then 6): blocks of classes by chunks of tokens."""
    head, bias_name = HEADS.get(name, ("weight", "bias"))
    fused_loss, loss = getattr(generated, f"linear_{name}"), getattr(generated, name)
    has_weights = "weights" in kwargs
    fixed = {k: v for k, v in kwargs.items() if k != "weights"}

    def fused(h, w, b, *weights):
        extra = {"weights": weights[0]} if has_weights else {}
        blocks = {} if class_chunk_size is None else {"class_chunk_size": class_chunk_size}
        named = {LABELS.get(name, k) if k == "targets" else k: v for k, v in fixed.items()}
        return fused_loss(h, **{head: w, bias_name: b}, **named, **extra, reduction=reduction, chunk_size=CHUNK,
                          softcap=softcap, **blocks)

    def unfused(h, w, b, *weights):
        extra = {"weights": weights[0]} if has_weights else {}
        targets = fixed["targets"]
        others = {k: v for k, v in fixed.items() if k != "targets"}
        logits = h @ w.T + b
        if softcap is not None:  # Gemma 2's cap, written here from its definition
            logits = softcap * mx.tanh(logits.astype(mx.float32) / softcap)
        return loss(logits, targets, **others, **extra, reduction=reduction)

    return fused, unfused


CASES = [pytest.param(name, options, id=f"{name}-{','.join(options) or 'default'}")
         for name in sorted(OPTIONS) for options in OPTIONS[name]]


@pytest.mark.parametrize("class_chunk_size", [None, 5], ids=["default tiles", "class blocks of 5"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name,options", CASES)
def test_values_and_gradients_equal_the_unfused_loss(name, options, reduction, class_chunk_size):
    rng = np.random.default_rng(zlib.crc32(f"{name} {options} {reduction}".encode()))
    hidden, weight, bias, kwargs = _arrays(name, options, rng)
    fused, unfused = _functions(name, kwargs, reduction, class_chunk_size=class_chunk_size)
    arrays = [hidden, weight, bias] + ([kwargs["weights"]] if "weights" in kwargs else [])
    argnums = list(range(len(arrays)))
    objective = (lambda f: lambda *a: mx.sum(f(*a) * mx.arange(1, TOKENS + 1))) if reduction == "none" else \
        (lambda f: f)
    want_value, want_grads = mx.value_and_grad(objective(unfused), argnums=argnums)(*arrays)
    for compiled in (False, True):
        function = mx.value_and_grad(objective(fused), argnums=argnums)
        value, grads = (mx.compile(function) if compiled else function)(*arrays)
        close_to_scale(value, want_value, f"value, compiled={compiled}")
        for index, (g, w) in enumerate(zip(grads, want_grads)):
            close_to_scale(g, w, f"gradient {index}, compiled={compiled}")
    close_to_scale(fused(*arrays), unfused(*arrays), "the loss itself")


@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float16])
@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_half_precision_equals_the_unfused_loss_to_its_rounding(name, dtype):
    rng = np.random.default_rng(7)
    hidden, weight, bias, kwargs = _arrays(name, {}, rng, dtype)
    fused, unfused = _functions(name, kwargs, "mean")
    value, grads = mx.value_and_grad(fused, argnums=[0, 1, 2])(hidden, weight, bias)
    want_value, want_grads = mx.value_and_grad(unfused, argnums=[0, 1, 2])(hidden, weight, bias)
    assert value.dtype == want_value.dtype == dtype
    unit = {mx.bfloat16: 2.0**-7, mx.float16: 2.0**-10}[dtype]
    close_to_scale(value, want_value, "value", 2 * unit)
    for index, (g, w) in enumerate(zip(grads, want_grads)):
        assert g.dtype == dtype
        close_to_scale(g, w, f"gradient {index}", 4 * unit)  # the unfused rounds its logits' gradient to dtype first


@pytest.mark.parametrize("class_chunk_size", [None, 5], ids=["default tiles", "class blocks of 5"])
@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_second_order_jvp_and_vmap_equal_the_unfused_loss(name, class_chunk_size):
    rng = np.random.default_rng(11)
    hidden, weight, bias, kwargs = _arrays(name, {}, rng)
    fused, unfused = _functions(name, kwargs, "mean", class_chunk_size=class_chunk_size)
    arrays = [hidden, weight, bias]
    directions = [mx.array(rng.normal(size=a.shape).astype(np.float32)) for a in arrays]

    for index, (g, w) in enumerate(zip(hessian_vector_products(fused, arrays, directions),
                                           hessian_vector_products(unfused, arrays, directions))):
        close_to_scale(g, w, f"Hessian-vector product, argument {index}", 1e-4)
    close_to_scale(mx.jvp(fused, arrays, directions)[1][0], mx.jvp(unfused, arrays, directions)[1][0], "jvp")
    batch = mx.stack([hidden, 2 * hidden])
    mapped = mx.vmap(lambda h: fused(h, weight, bias))(batch)
    for index in range(2):
        close_to_scale(mapped[index], unfused(batch[index], weight, bias), f"vmapped entry {index}")
    check_vmapped_derivatives(fused, unfused, batch, [weight, bias])


@pytest.mark.parametrize("shape", [(0, FEATURES), (2, 3, FEATURES)], ids=["no tokens", "batch of sequences"])
def test_any_leading_shape_of_tokens(shape):
    rng = np.random.default_rng(3)
    hidden = mx.array(rng.normal(size=shape).astype(np.float32))
    weight = mx.array(rng.normal(size=(CLASSES, FEATURES)).astype(np.float32))
    targets = mx.array(rng.integers(0, CLASSES, size=shape[:-1]).astype(np.int32))
    for reduction in ("none", "sum"):
        got = generated.linear_cross_entropy(hidden, weight, targets, reduction=reduction, chunk_size=CHUNK)
        close_to_scale(got, generated.cross_entropy(hidden @ weight.T, targets, reduction=reduction), reduction)
    _, lse = generated.linear_cross_entropy(hidden, weight, targets, chunk_size=CHUNK, return_logsumexp=True)
    assert lse.shape == shape[:-1]


def test_bad_arguments_are_named():
    hidden, weight = mx.zeros((4, 8)), mx.zeros((10, 8))
    targets = mx.zeros((4,), dtype=mx.int32)
    with pytest.raises(ValueError, match=r"weight must have shape \(classes, 8\)"):
        generated.linear_cross_entropy(hidden, mx.zeros((10, 7)), targets)
    with pytest.raises(ValueError, match=r"bias must have shape \(10,\)"):
        generated.linear_cross_entropy(hidden, weight, targets, bias=mx.zeros((9,)))
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        generated.linear_cross_entropy(hidden, weight, targets, chunk_size=0)
    with pytest.raises(ValueError, match="class_chunk_size must be a positive integer"):
        generated.linear_cross_entropy(hidden, weight, targets, class_chunk_size=2.5)
    with pytest.raises(ValueError, match="(?i)targets"):
        generated.linear_cross_entropy(hidden, weight, mx.zeros((5,), dtype=mx.int32))
    with pytest.raises(ValueError, match="head_weight must have shape"):
        generated.linear_multi_margin_loss(hidden, mx.zeros((10, 3)), targets)


@pytest.mark.parametrize("class_chunk_size", [None, 5], ids=["default tiles", "class blocks of 5"])
@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_an_excluded_class_per_token_is_the_unfused_loss_of_logits_minus_infinity_there(name, class_chunk_size):
    """``excluded=``: a class per token left out of its row (NT-Xent's own similarity), as the unfused loss of
    logits at -inf there: values and gradients, chunked, on blocks of the classes (the excluded class in any
    of them), compiled; a class outside the row leaves it whole."""
    rng = np.random.default_rng(zlib.crc32(f"excluded {name}".encode()))
    hidden, weight, bias, kwargs = _arrays(name, {}, rng)
    targets = kwargs["targets"]
    excluded = mx.array(rng.integers(0, CLASSES + 2, size=TOKENS).astype(np.int32))  # 2 of 39 outside the row
    excluded = mx.where(excluded == targets, (targets + 1) % CLASSES, excluded)  # never the target's class
    head, bias_name = HEADS.get(name, ("weight", "bias"))
    named = {LABELS.get(name, "targets"): targets}

    def fused(h, w, b):
        return getattr(generated, f"linear_{name}")(h, **{head: w, bias_name: b}, **named, excluded=excluded,
                                                    reduction="sum", chunk_size=CHUNK,
                                                    class_chunk_size=class_chunk_size)

    def unfused(h, w, b):
        logits = mx.where(mx.arange(CLASSES) == excluded[:, None], -mx.inf, h @ w.T + b)
        return getattr(generated, name)(logits, targets, reduction="sum")

    want = mx.value_and_grad(unfused, argnums=[0, 1, 2])(hidden, weight, bias)
    for function in (fused, mx.compile(fused)):
        value, grads = mx.value_and_grad(function, argnums=[0, 1, 2])(hidden, weight, bias)
        close_to_scale(value, want[0], f"{name} excluded: value")
        for index, (g, w) in enumerate(zip(grads, want[1])):
            close_to_scale(g, w, f"{name} excluded: gradient {index}")
    plain = getattr(generated, f"linear_{name}")(hidden, **{head: weight, bias_name: bias}, **named, reduction="sum")
    assert not np.isclose(value.item(), plain.item())  # the exclusion is felt


def test_excluded_classes_are_checked():
    hidden, weight, targets = mx.zeros((4, 8)), mx.zeros((10, 8)), mx.zeros((4,), dtype=mx.int32)
    with pytest.raises(ValueError, match=r"Excluded must be one class index per token, integers of shape \(4,\)"):
        generated.linear_cross_entropy(hidden, weight, targets, excluded=mx.zeros((3,), dtype=mx.int32))
    with pytest.raises(ValueError, match="Excluded must be one class index per token"):
        generated.linear_cross_entropy(hidden, weight, targets, excluded=mx.zeros((4,)))


PROBABILITIES = ["cross_entropy", "poly1_cross_entropy"]  # the losses whose targets may be probabilities
# Losses whose backward compares the logits with their row's maximum: a tile's logits (a matmul of another
# shape) may round otherwise than the forward's on a GPU, so they keep the chunks of tokens
OF_THE_MAXIMUM = ["multiclass_hinge_loss", "multiclass_perceptron_loss"]


@pytest.mark.parametrize("name,options", [pytest.param(name, {}, id=name) for name in sorted(OPTIONS)]
                         + [pytest.param(name, {"probabilities": True}, id=f"{name}-probabilities")
                            for name in PROBABILITIES])
def test_every_loss_runs_its_backward_on_tiles(name, options, monkeypatch):
    # poly1's and multi_margin's backward reduce their rows (the softmax at the class, the sum of the
    # margins' slopes): their linear_ form takes programs that make those sums in the forward instead.
    # Probability targets are cut to each tile's classes. The maximum's losses are not tried at all.
    tried = []
    runs_on_blocks = _linear.RowsProgram.runs_on_blocks
    monkeypatch.setattr(_linear.RowsProgram, "runs_on_blocks",
                        lambda self, *a: tried.append(runs_on_blocks(self, *a)) or tried[-1])
    rng = np.random.default_rng(13)
    hidden, weight, bias, kwargs = _arrays(name, options, rng)
    fused, _ = _functions(name, kwargs, "mean", class_chunk_size=5)
    mx.eval(mx.grad(fused)(hidden, weight, bias))
    assert tried == ([] if name in OF_THE_MAXIMUM else [True])


@pytest.mark.parametrize("class_chunk_size", [None, 5], ids=["default tiles", "class blocks of 5"])
@pytest.mark.parametrize("name", PROBABILITIES)
def test_the_gradient_of_probability_targets_equals_the_unfused_loss(name, class_chunk_size):
    # each tile's part of the targets' gradient (the size of the logits), put back in its place
    rng = np.random.default_rng(17)
    hidden, weight, bias, kwargs = _arrays(name, {"probabilities": True}, rng)
    targets, blocks = kwargs.pop("targets"), {} if class_chunk_size is None else {"class_chunk_size": class_chunk_size}
    fused = getattr(generated, f"linear_{name}")
    got = mx.grad(lambda t: fused(hidden, weight, t, bias=bias, reduction="sum", chunk_size=CHUNK, **blocks))(targets)
    want = mx.grad(lambda t: getattr(generated, name)(hidden @ weight.T + bias, t, reduction="sum"))(targets)
    close_to_scale(got, want, "the targets' gradient")


SCALED_SPEC = """
from generator.spec import ClassTarget, Gather, Input, LogSumExp, Loss

logits = Input("logits", doc="The logits.")
scale = Input("scale", per_row=True, doc="One scale a row.")
targets = ClassTarget("targets", doc="The class indices.")
spec = Loss("scaled_ce", inputs=[logits, scale, targets], axis=-1, reduction="none",
            doc="Computes a test loss.", row=LogSumExp(logits) - scale * Gather(logits, targets))
"""
GATHERED_EXP_SPEC = """
from sympy import exp

from generator.spec import ClassTarget, Gather, Input, Loss, RowMean

logits = Input("logits", doc="The logits.")
targets = ClassTarget("targets", doc="The class indices.")
spec = Loss("gathered_exp", inputs=[logits, targets], axis=-1, reduction="none",
            doc="Computes a test loss.", row=Gather(exp(logits - RowMean(logits)), targets))
"""


@pytest.mark.parametrize("class_chunk_size", [None, 4, 3], ids=["default tiles", "blocks of 4", "blocks of 3"])
def test_a_users_spec_on_tiles_a_per_token_input_and_a_gathered_value_the_backward_reads(tmp_path, class_chunk_size):
    # A per-token float input's gradient is the same from every block of the classes (it was summed over
    # them); a temporary gathered in the forward and read by the backward stays (it was written away).
    package = build_package(tmp_path, {"scaled_ce": SCALED_SPEC, "gathered_exp": GATHERED_EXP_SPEC})
    rng = np.random.default_rng(19)
    hidden, weight, _, _ = _arrays("cross_entropy", {}, rng)
    scale = mx.array(rng.uniform(0.5, 1.5, size=TOKENS).astype(np.float32))
    targets = mx.array(rng.integers(0, CLASSES, size=TOKENS).astype(np.int32))
    blocks = {} if class_chunk_size is None else {"class_chunk_size": class_chunk_size}
    cases = {
        "scaled_ce": (lambda h, w, s: package.linear_scaled_ce(h, w, s, targets, reduction="sum", chunk_size=CHUNK,
                                                               **blocks),
                      lambda h, w, s: mx.sum(package.scaled_ce(h @ w.T, s, targets))),
        "gathered_exp": (lambda h, w, s: package.linear_gathered_exp(h, w, targets, reduction="sum", chunk_size=CHUNK,
                                                                     **blocks),
                         lambda h, w, s: mx.sum(package.gathered_exp(h @ w.T, targets))),
    }
    for name, (fused, unfused) in cases.items():
        got = mx.value_and_grad(fused, argnums=[0, 1, 2])(hidden, weight, scale)
        want = mx.value_and_grad(unfused, argnums=[0, 1, 2])(hidden, weight, scale)
        close_to_scale(got[0], want[0], f"{name}: value")
        for index, (g, w) in enumerate(zip(got[1], want[1])):
            close_to_scale(g, w, f"{name}: gradient {index}")


def test_the_logits_are_never_whole_and_memory_stays_flat_as_the_tokens_grow():
    # 256 tokens x 4096 classes: the float32 logits alone are 4 MiB, their gradient as much again; at 2048
    # tokens, 32 MiB. The bound is half of the smaller logits at both sizes.
    rng = np.random.default_rng(5)
    classes = 4096
    weight = mx.array(rng.normal(size=(classes, FEATURES)).astype(np.float32))
    bound = 256 * classes * 4 / 2
    for tokens in (256, 2048):
        hidden = mx.array(rng.normal(size=(tokens, FEATURES)).astype(np.float32))
        targets = mx.array(rng.integers(0, classes, size=tokens).astype(np.int32))
        mx.eval(hidden, weight, targets)
        returned = (hidden.nbytes + weight.nbytes) * 2  # the gradients, and the float32 sum of weight's
        # tiles of 256 classes by 64 tokens (a quarter of a chunk's 16 x 4096 logits), then of 128 by 128
        for blocks in ({}, {"class_chunk_size": 128}):
            step = mx.value_and_grad(lambda h, w: generated.linear_cross_entropy(
                h, w, targets, reduction="mean", chunk_size=16, **blocks), argnums=[0, 1])
            assert peak_memory(step, [hidden, weight]) < returned + bound, (tokens, blocks)
    unfused = mx.value_and_grad(lambda h, w: generated.cross_entropy(h @ w.T, targets, reduction="mean"),
                                argnums=[0, 1])
    assert peak_memory(unfused, [hidden, weight]) > tokens * classes * 4  # the measure sees the logits


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_soft_capped_logits_equal_the_unfused_loss_of_capped_logits(name):
    rng = np.random.default_rng(zlib.crc32(f"softcap {name}".encode()))
    hidden, weight, bias, kwargs = _arrays(name, {}, rng)
    hidden = 4 * hidden  # logits well past the cap, where tanh bends them
    fused, unfused = _functions(name, kwargs, "mean", softcap=2.5)
    want_value, want_grads = mx.value_and_grad(unfused, argnums=[0, 1, 2])(hidden, weight, bias)
    uncapped_value = _functions(name, kwargs, "mean")[1](hidden, weight, bias)
    assert abs(float(want_value) - float(uncapped_value)) > 1e-3  # the cap matters on these logits
    for compiled in (False, True):
        function = mx.value_and_grad(fused, argnums=[0, 1, 2])
        value, grads = (mx.compile(function) if compiled else function)(hidden, weight, bias)
        close_to_scale(value, want_value, f"value, compiled={compiled}")
        for index, (g, w) in enumerate(zip(grads, want_grads)):
            close_to_scale(g, w, f"gradient {index}, compiled={compiled}")


def test_the_logsumexp_comes_back_exact_and_differentiable():
    rng = np.random.default_rng(17)
    hidden, weight, bias, kwargs = _arrays("cross_entropy", {}, rng)
    targets = kwargs["targets"]
    loss, lse = generated.linear_cross_entropy(hidden, weight, targets, bias=bias, chunk_size=CHUNK,
                                               return_logsumexp=True)
    logits = np.asarray(hidden, dtype=np.float64) @ np.asarray(weight, dtype=np.float64).T + np.asarray(bias)
    top = logits.max(-1, keepdims=True)
    want = (top + np.log(np.exp(logits - top).sum(-1, keepdims=True)))[:, 0]  # float64 truth
    assert lse.shape == (TOKENS,) and lse.dtype == mx.float32
    np.testing.assert_allclose(np.asarray(lse), want, rtol=1e-5)
    close_to_scale(loss, generated.cross_entropy(hidden @ weight.T + bias, targets), "the loss beside it")

    def fused(h, w, b):  # a z-loss written by the user on the returned logsumexp
        loss, lse = generated.linear_cross_entropy(h, w, targets, bias=b, chunk_size=CHUNK, reduction="mean",
                                                   return_logsumexp=True)
        return loss + 1e-2 * mx.mean(lse**2)

    def unfused(h, w, b):
        logits = h @ w.T + b
        return generated.cross_entropy(logits, targets, reduction="mean") + 1e-2 * mx.mean(mx.logsumexp(logits, -1)**2)

    for g, w in zip(mx.grad(fused, argnums=[0, 1, 2])(hidden, weight, bias),
                    mx.grad(unfused, argnums=[0, 1, 2])(hidden, weight, bias)):
        close_to_scale(g, w, "gradient through the logsumexp")


def _layer_case(layer, hidden, targets):
    """The fused loss of ``layer`` as the head against the loss of ``layer``'s own output, and their gradients
    in the layer's trainable parameters and in hidden."""
    def fused(model, h):
        return generated.linear_cross_entropy(h, model, targets, reduction="mean", chunk_size=CHUNK)

    def unfused(model, h):
        logits = model.as_linear(h) if isinstance(model, (nn.Embedding, nn.QuantizedEmbedding)) else model(h)
        return generated.cross_entropy(logits, targets, reduction="mean")

    for function in (fused, unfused):
        value, grads = nn.value_and_grad(layer, function)(layer, hidden)
        yield value, grads, mx.grad(lambda h: function(layer, h))(hidden)


@pytest.mark.parametrize("kind", ["linear with bias", "tied embedding", "quantized linear", "quantized embedding"])
def test_a_layer_is_a_head(kind):
    rng = np.random.default_rng(zlib.crc32(kind.encode()))
    features = 64  # a quantized layer's groups: 64 features
    layer = {"linear with bias": lambda: nn.Linear(features, CLASSES),
             "tied embedding": lambda: nn.Embedding(CLASSES, features),
             "quantized linear": lambda: nn.QuantizedLinear(features, CLASSES, bias=True),
             "quantized embedding": lambda: nn.QuantizedEmbedding(CLASSES, features)}[kind]()
    if kind.startswith("quantized"):
        layer.unfreeze(keys=["scales", "biases"], strict=False)  # trained scales and biases: exact gradients too
    hidden = mx.array(rng.normal(size=(TOKENS, features)).astype(np.float32))
    targets = mx.array(rng.integers(0, CLASSES, size=TOKENS).astype(np.int32))
    (value, grads, grad_hidden), (want_value, want_grads, want_hidden) = _layer_case(layer, hidden, targets)
    close_to_scale(value, want_value, "value")
    close_to_scale(grad_hidden, want_hidden, "gradient of hidden")
    flat, want_flat = dict(nn.utils.tree_flatten(grads)), dict(nn.utils.tree_flatten(want_grads))
    assert sorted(flat) == sorted(want_flat) and flat
    for key in flat:
        close_to_scale(flat[key], want_flat[key], f"gradient of the layer's {key}")


def test_a_frozen_quantized_head_costs_no_weight_gradient():
    # The integers of a quantized head have no gradient; its scales' and biases' are computed only when
    # asked for. Asked for hidden's alone, nothing the size of the float32 weight is made.
    rng = np.random.default_rng(23)
    tokens, classes, features = 256, 4096, 512
    layer = nn.QuantizedLinear(features, classes, bias=False)
    hidden = mx.array(rng.normal(size=(tokens, features)).astype(np.float32))
    targets = mx.array(rng.integers(0, classes, size=tokens).astype(np.int32))
    mx.eval(layer.parameters(), hidden, targets)

    def loss(model, h):
        return generated.linear_cross_entropy(h, model, targets, reduction="mean", chunk_size=16)

    float_weight = classes * features * 4  # 8 MiB
    assert peak_memory(mx.grad(lambda h: loss(layer, h)), [hidden]) < float_weight / 2
    layer.unfreeze(keys=["scales"], strict=False)
    assert peak_memory(nn.value_and_grad(layer, loss), [layer, hidden]) > float_weight  # the measure sees it


def test_bad_heads_and_options_are_named():
    hidden, targets = mx.zeros((4, 64)), mx.zeros((4,), dtype=mx.int32)
    with pytest.raises(ValueError, match="bias is given twice"):
        generated.linear_cross_entropy(hidden, nn.Linear(64, 10), targets, bias=mx.zeros((10,)))
    with pytest.raises(ValueError, match="quantized layer of 128 features"):
        generated.linear_cross_entropy(hidden, nn.QuantizedLinear(128, 10), targets)
    for softcap in (0, -1.0, float("inf"), "2", True):
        with pytest.raises(ValueError, match="softcap must be None or a positive finite number"):
            generated.linear_cross_entropy(hidden, mx.zeros((10, 64)), targets, softcap=softcap)
    with pytest.raises(ValueError, match="Return logsumexp must be True or False"):
        generated.linear_cross_entropy(hidden, mx.zeros((10, 64)), targets, return_logsumexp=1)


@pytest.mark.parametrize("class_chunk_size", [None, 4])
def test_a_head_of_no_classes_gives_what_the_unfused_loss_gives(class_chunk_size):
    hidden, weight, targets = mx.ones((3, FEATURES)), mx.zeros((0, FEATURES)), mx.array([0, 1, 2])

    def fused(h):
        return generated.linear_cross_entropy(h, weight, targets, reduction="mean", class_chunk_size=class_chunk_size)

    value, grad = mx.value_and_grad(fused)(hidden)
    want_value, want_grad = mx.value_and_grad(
        lambda h: generated.cross_entropy(h @ weight.T, targets, reduction="mean"))(hidden)
    assert np.isnan(value.item()) and np.isnan(want_value.item())  # every target is outside the row
    assert np.array_equal(np.array(grad), np.array(want_grad))


@pytest.mark.parametrize("class_chunk_size", [None, 3], ids=["default", "class blocks of 3"])
def test_adversarial_inputs_give_the_unfused_nan_and_inf_pattern(class_chunk_size):
    # -inf masked classes (bias), a NaN feature, a 1e30 feature: the loss and every gradient as the unfused
    rng = np.random.default_rng(3)
    hidden = mx.array(rng.normal(size=(6, 4)).astype(np.float32))
    hidden[2, 1], hidden[4, 0] = np.nan, 1e30
    weight = mx.array(rng.normal(size=(10, 4)).astype(np.float32))
    bias = mx.array(np.where(np.arange(10) % 3 == 0, -np.inf, 0).astype(np.float32))
    targets, cotangent = mx.array([1, 2, 4, 5, 7, 8]), mx.arange(1, 7).astype(mx.float32)

    def fused(h, w, b):
        return generated.linear_cross_entropy(h, w, targets, bias=b, reduction="none", lse_square_scale=1e-3,
                                              class_chunk_size=class_chunk_size)

    def unfused(h, w, b):
        return generated.cross_entropy(h @ w.T + b, targets, reduction="none", lse_square_scale=1e-3)

    got, want = (mx.vjp(f, [hidden, weight, bias], [cotangent]) for f in (fused, unfused))
    for g, w in zip([got[0][0], *got[1]], [want[0][0], *want[1]]):
        g, w = np.array(g), np.array(w)
        assert np.array_equal(np.isnan(g), np.isnan(w)) and np.array_equal(np.isinf(g), np.isinf(w))
        finite = np.isfinite(w)
        np.testing.assert_allclose(g[finite], w[finite], rtol=1e-5, atol=1e-6)
    assert np.isnan(np.array(got[0][0])).any() and np.isinf(np.array(got[0][0])).any()  # the inputs reach the loss
