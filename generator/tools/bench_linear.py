"""``make bench``'s fused-linear section: ``linear_cross_entropy`` against the logits made whole.

At tokens x features x classes of 512 x 128 x 32768 and 256 x 128 x 131072, in
float32 and bfloat16, ``mx.compile(mx.value_and_grad(...))`` with respect to
the features and the head, against ``mlx.nn.losses.cross_entropy(hidden @
weight.T, targets)`` compiled and eager: time a step and peak memory, side by
side in one run. Transient memory is the peak less the returned gradients (the
inputs are held before the call and not counted). Targets (issue 16): the
generated form's transient memory at most 1/8 of compiled MLX's at the first
size and 1/16 at the second, and its time at least 0.95 of compiled MLX's.

A preference loss the same way: ``linear_dpo_loss`` of chosen and rejected
completions' hidden states, against ``dpo_loss`` of their log-probabilities
from ``mlx.nn.losses.cross_entropy`` of the logits made whole (float32); and
``linear_clip_loss`` of two batches of embeddings, against the cross entropy
of their similarity matrix made whole, both ways; ``linear_nt_xent_loss`` of
two views, against the cross entropy of both views' similarities made whole
(2N x 2N, each embedding's own masked).
"""

from __future__ import annotations

import time

SIZES = [(512, 128, 32768), (256, 128, 131072)]
QUICK_SIZES = [(64, 16, 1024)]
DTYPES = ("float32", "bfloat16")
VARIANTS = ("linear", "eager", "compiled")
PREFERENCE_SIZE = (2, 128, 128, 32768)  # pairs x tokens of a completion x features x classes
QUICK_PREFERENCE_SIZE = (2, 8, 16, 1024)
CONTRASTIVE_SIZE = (4096, 32)  # batch x features
QUICK_CONTRASTIVE_SIZE = (64, 8)
VIEWS_SIZE = (2048, 32)  # NT-Xent: examples (each of two views) x features: 4096 embeddings, as CLIP's
QUICK_VIEWS_SIZE = (32, 8)
MEMORY_GOALS = {SIZES[0]: 1 / 8, SIZES[1]: 1 / 16}
TIME_GOAL = 0.95


def _functions(targets):
    import mlx.nn.losses as reference

    import generated

    def linear(hidden, weight):
        return generated.linear_cross_entropy(hidden, weight, targets, reduction="mean")

    def whole(hidden, weight):
        return reference.cross_entropy(hidden @ weight.T, targets, reduction="mean")

    return _variants(linear, whole, argnums=[0, 1])


def _preference_functions(labels, references):
    import mlx.nn.losses as reference

    import generated

    def linear(chosen, rejected, weight):
        return generated.linear_dpo_loss(chosen, rejected, weight, *labels, *references)

    def whole(chosen, rejected, weight):  # each completion's log-probability: minus its tokens' cross entropy
        log_probs = [-reference.cross_entropy(h @ weight.T, t).sum(axis=-1) for h, t in zip((chosen, rejected), labels)]
        return generated.dpo_loss(*log_probs, *references)

    return _variants(linear, whole, argnums=[0, 1, 2])


def _contrastive_functions(logit_scale):
    import mlx.core as mx
    import mlx.nn.losses as reference

    import generated

    def linear(images, texts):
        return generated.linear_clip_loss(images, texts, logit_scale)

    def whole(images, texts):
        logits, labels = logit_scale * images @ texts.T, mx.arange(images.shape[0])
        return (reference.cross_entropy(logits, labels, reduction="mean")
                + reference.cross_entropy(logits.T, labels, reduction="mean")) / 2

    return _variants(linear, whole, argnums=[0, 1])


def _views_functions(temperature):
    import mlx.core as mx
    import mlx.nn.losses as reference

    import generated

    def linear(first, second):
        return generated.linear_nt_xent_loss(first, second, temperature)

    def whole(first, second):  # SimCLR: both views' cosine similarities, each embedding's own masked
        z = mx.concatenate([first, second])
        z = z / mx.linalg.norm(z, axis=-1, keepdims=True)
        batch = first.shape[0]
        logits = mx.where(mx.eye(2 * batch, dtype=mx.bool_), -mx.inf, z @ z.T / temperature)
        positives = mx.concatenate([mx.arange(batch) + batch, mx.arange(batch)])
        return reference.cross_entropy(logits, positives, reduction="mean")

    return _variants(linear, whole, argnums=[0, 1])


def _variants(linear, whole, argnums):
    import mlx.core as mx

    step = lambda loss: mx.value_and_grad(loss, argnums=argnums)
    return {"linear": mx.compile(step(linear)), "eager": step(whole), "compiled": mx.compile(step(whole))}


def _measured(functions, arrays, rounds):
    """Median step time (ms), transient peak memory (bytes: the peak above ``arrays``, less their
    gradients, which are returned) and the loss of each variant."""
    import mlx.core as mx

    from .bench_memory import peak_memory

    returned = sum(a.nbytes for a in arrays)
    times = {name: [] for name in VARIANTS}
    for name in VARIANTS:  # warm-up: compilation is not a step's
        mx.eval(functions[name](*arrays))
    for _ in range(rounds):
        for name in VARIANTS:
            start = time.perf_counter()
            mx.eval(functions[name](*arrays))
            times[name].append(time.perf_counter() - start)
    memory = {name: max(peak_memory(functions[name], arrays) - returned, 0) for name in VARIANTS}
    values = {name: float(functions[name](*arrays)[0].astype(mx.float32).item()) for name in VARIANTS}
    return {"median_ms": {name: 1e3 * sorted(t)[len(t) // 2] for name, t in times.items()},
            "transient_bytes": memory, "loss": values}


def measure(size, dtype_name, rounds):
    """Median step time (ms) and transient peak memory (bytes) of each variant at ``size``."""
    import mlx.core as mx

    tokens, features, classes = size
    dtype = getattr(mx, dtype_name)
    hidden = mx.random.normal((tokens, features), key=mx.random.key(0)).astype(dtype)
    weight = (0.05 * mx.random.normal((classes, features), key=mx.random.key(1))).astype(dtype)
    targets = mx.random.randint(0, classes, (tokens,), key=mx.random.key(2))
    mx.eval(hidden, weight, targets)
    return {"size": list(size), "dtype": dtype_name, **_measured(_functions(targets), [hidden, weight], rounds)}


def measure_preference(size, rounds):
    """``measure`` for linear_dpo_loss at ``size`` (pairs, tokens, features, classes), in float32."""
    import mlx.core as mx

    pairs, tokens, features, classes = size
    chosen, rejected = (mx.random.normal((pairs, tokens, features), key=mx.random.key(k)) for k in (0, 1))
    weight = 0.05 * mx.random.normal((classes, features), key=mx.random.key(2))
    labels = [mx.random.randint(0, classes, (pairs, tokens), key=mx.random.key(k)) for k in (3, 4)]
    references = [-tokens * mx.random.uniform(shape=(pairs,), key=mx.random.key(k)) for k in (5, 6)]
    mx.eval(chosen, rejected, weight, *labels, *references)
    functions = _preference_functions(labels, references)
    return {"size": list(size), "dtype": "float32", "preference": "dpo_loss",
            **_measured(functions, [chosen, rejected, weight], rounds)}


def measure_contrastive(size, rounds):
    """``measure`` for linear_clip_loss at ``size`` (batch, features), in float32."""
    import mlx.core as mx

    images, texts = (mx.random.normal(size, key=mx.random.key(k)) for k in (0, 1))
    images, texts = (a / mx.linalg.norm(a, axis=-1, keepdims=True) for a in (images, texts))
    mx.eval(images, texts)
    return {"size": list(size), "dtype": "float32", "contrastive": "clip_loss",
            **_measured(_contrastive_functions(10.0), [images, texts], rounds)}


def measure_views(size, rounds):
    """``measure`` for linear_nt_xent_loss at ``size`` (examples, features), in float32."""
    import mlx.core as mx

    first, second = (mx.random.normal(size, key=mx.random.key(k)) for k in (0, 1))
    mx.eval(first, second)
    return {"size": list(size), "dtype": "float32", "contrastive": "nt_xent_loss",
            **_measured(_views_functions(0.5), [first, second], rounds)}


def run(quick=False, echo=print):
    """Every size in every dtype, then the preference loss and the contrastive ones."""
    entries = []
    for size in QUICK_SIZES if quick else SIZES:
        for dtype_name in DTYPES:
            entries.append(measure(size, dtype_name, 1 if quick else 3))
            echo(_progress(entries[-1]))
    entries.append(measure_preference(QUICK_PREFERENCE_SIZE if quick else PREFERENCE_SIZE, 1 if quick else 3))
    echo(_progress(entries[-1]))
    entries.append(measure_contrastive(QUICK_CONTRASTIVE_SIZE if quick else CONTRASTIVE_SIZE, 1 if quick else 3))
    echo(_progress(entries[-1]))
    entries.append(measure_views(QUICK_VIEWS_SIZE if quick else VIEWS_SIZE, 1 if quick else 3))
    echo(_progress(entries[-1]))
    return entries


def summarize(entries):
    """The section's targets, each with the figure it is judged on."""
    checks = []
    for entry in entries:
        size = tuple(entry["size"])
        memory, ms = entry["transient_bytes"], entry["median_ms"]
        label = f"{'x'.join(map(str, size))} {entry['dtype']}"
        if size in MEMORY_GOALS:
            ratio = memory["linear"] / max(memory["compiled"], 1)
            checks.append({"target": f"{label}: transient memory / compiled MLX's", "value": ratio,
                           "goal": f"<= {MEMORY_GOALS[size]:.4g}", "met": ratio <= MEMORY_GOALS[size]})
            speed = ms["compiled"] / ms["linear"]
            checks.append({"target": f"{label}: speed / compiled MLX's", "value": speed,
                           "goal": f">= {TIME_GOAL}", "met": speed >= TIME_GOAL})
    return checks


def _loss_name(entry):
    return entry.get("preference") or entry.get("contrastive") or "cross_entropy"


def _label(entry):
    return f"{_loss_name(entry)} {'x'.join(map(str, entry['size']))}"


def _progress(entry):
    ms, memory = entry["median_ms"], entry["transient_bytes"]
    return (f"linear {_label(entry):32s} {entry['dtype']:9s} "
            + " ".join(f"{k}={ms[k]:.0f}ms/{memory[k] / 2**20:.1f}MiB" for k in VARIANTS))


def markdown(entries, checks):
    """The section of bench.md."""
    lines = ["### fused linear + a class loss: value_and_grad in the hidden states and the head, compiled", "",
             "Against the loss of the logits made whole: cross_entropy's (tokens x features x classes), and",
             "dpo_loss's of each completion's log-probability (pairs x tokens of a completion x features x",
             "classes; chosen and rejected completions), clip_loss's of the similarities (batch x features),",
             "nt_xent_loss's of both views' similarities (examples x features; 2N x 2N).", "",
             "| loss | size | dtype | " + " | ".join(f"{v} ms" for v in VARIANTS)
             + " | " + " | ".join(f"{v} MiB" for v in VARIANTS) + " |",
             "|---|---|---|" + "---:|" * (2 * len(VARIANTS))]
    for entry in entries:
        ms, memory = entry["median_ms"], entry["transient_bytes"]
        lines.append(f"| linear_{_loss_name(entry)} | {' x '.join(map(str, entry['size']))} | "
                     f"{entry['dtype']} | " + " | ".join(f"{ms[v]:.0f}" for v in VARIANTS) + " | "
                     + " | ".join(f"{memory[v] / 2**20:.1f}" for v in VARIANTS) + " |")
    lines += ["", "Memory is transient: the peak above the inputs, less the returned gradients.", "",
              "| fused-linear target | value | goal | |", "|---|---:|---|---|"]
    for check in checks:
        lines.append(f"| {check['target']} | {check['value']:.3f} | {check['goal']} | "
                     f"{'met' if check['met'] else 'MISSED'} |")
    return lines
