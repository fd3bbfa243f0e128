"""``make bench``'s alignment section: ``ctc_loss`` against MLX's autodiff of the same recursion.

MLX has no CTC loss; what an MLX user writes instead is the alpha recursion in
MLX operations and ``mx.value_and_grad`` of it. That is the reference here,
written as such a user would (each frame one batched step, shifted states,
the skip mask), with a log-semiring sum whose derivative is finite where no
path reaches a state (MLX's ``logaddexp`` of two -inf has a NaN derivative,
which would make every gradient NaN). Both as called and under
``mx.compile``: a step's time, its transient memory (peak above the inputs,
less the returned gradient) and the first call's time (the compilation; on a CPU it depends on
whether MLX's cache of compiled kernels is warm).
"""

from __future__ import annotations

import math
import time

SIZE = (200, 16, 32, 50)  # frames x sequences x classes x labels: characters of a few seconds of speech
QUICK_SIZE = (12, 4, 8, 4)
VARIANTS = ("generated", "generated_compiled", "eager", "compiled")


def _add(a, b):
    import mlx.core as mx

    none = (a == -math.inf) & (b == -math.inf)
    return mx.where(none, -math.inf, mx.logaddexp(mx.where(none, 0.0, a), mx.where(none, 0.0, b)))


def autodiff_ctc(log_probs, targets, input_lengths, target_lengths):
    """CTC's mean loss by the alpha recursion in MLX operations (the reference MLX differentiates)."""
    import mlx.core as mx

    frames, count, _ = log_probs.shape
    width = 2 * targets.shape[1] + 1
    states = mx.zeros((count, width), mx.int32)
    states[:, 1::2] = targets
    emissions = mx.take_along_axis(log_probs, mx.broadcast_to(states[None], (frames, count, width)), axis=2)
    position = mx.arange(width)
    emissions = mx.where(position < 2 * target_lengths[:, None] + 1, emissions, -math.inf)
    before = mx.concatenate([mx.full((count, 2), -1, mx.int32), states[:, :-2]], axis=1)
    skip = (states != 0) & (states != before)
    pad = lambda a, k: mx.concatenate([mx.full((count, k), -math.inf), a[:, :-k]], axis=1)
    alpha = mx.where(position < 2, emissions[0], -math.inf)
    for t in range(1, frames):
        step = _add(_add(alpha, pad(alpha, 1)), mx.where(skip, pad(alpha, 2), -math.inf)) + emissions[t]
        alpha = mx.where(t < input_lengths[:, None], step, alpha)
    last = 2 * target_lengths[:, None]
    ends = [mx.take_along_axis(alpha, mx.maximum(last - k, 0), axis=1)[:, 0] for k in (0, 1)]
    total = _add(ends[0], mx.where(last[:, 0] >= 1, ends[1], -math.inf))
    return mx.mean(-total / mx.maximum(target_lengths, 1))


def measure(size, rounds):
    """Median step time (ms), transient memory (bytes) and first-call time (s) of each variant."""
    import mlx.core as mx

    import generated

    from .bench_memory import peak_memory

    frames, count, classes, labels = size
    logits = mx.random.normal((frames, count, classes), key=mx.random.key(0))
    log_probs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    targets = mx.random.randint(1, classes, (count, labels), key=mx.random.key(1))
    input_lengths = mx.random.randint(frames * 3 // 4, frames + 1, (count,), key=mx.random.key(2))
    target_lengths = mx.random.randint(labels * 3 // 5, labels + 1, (count,), key=mx.random.key(3))
    mx.eval(log_probs, targets, input_lengths, target_lengths)
    rest = (targets, input_lengths, target_lengths)
    ours = mx.value_and_grad(lambda x: generated.ctc_loss(x, *rest))
    theirs = mx.value_and_grad(lambda x: autodiff_ctc(x, *rest))
    functions = {"generated": ours, "generated_compiled": mx.compile(ours), "eager": theirs,
                 "compiled": mx.compile(theirs)}
    first, times = {}, {name: [] for name in VARIANTS}
    for name in VARIANTS:
        start = time.perf_counter()
        mx.eval(functions[name](log_probs))
        first[name] = time.perf_counter() - start
    for _ in range(rounds):
        for name in VARIANTS:
            start = time.perf_counter()
            mx.eval(functions[name](log_probs))
            times[name].append(time.perf_counter() - start)
    memory = {name: max(peak_memory(functions[name], [log_probs]) - log_probs.nbytes, 0) for name in VARIANTS}
    values = {name: float(functions[name](log_probs)[0].item()) for name in VARIANTS}
    return {"size": list(size), "median_ms": {n: 1e3 * sorted(t)[len(t) // 2] for n, t in times.items()},
            "transient_bytes": memory, "first_call_s": first, "loss": values}


def run(quick=False, echo=print):
    entry = measure(QUICK_SIZE if quick else SIZE, 1 if quick else 5)
    ms, memory = entry["median_ms"], entry["transient_bytes"]
    echo("ctc " + " ".join(f"{v}={ms[v]:.0f}ms/{memory[v] / 2**20:.1f}MiB" for v in VARIANTS))
    return [entry]


def markdown(entries):
    """The section of bench.md."""
    lines = ["### ctc_loss: value_and_grad against MLX's autodiff of the same recursion", "",
             "frames x sequences x classes x labels; the reference is the alpha recursion in MLX operations,",
             "differentiated by MLX (mean reduction, lengths drawn per sequence).", "",
             "| size | " + " | ".join(f"{v} ms" for v in VARIANTS) + " | " + " | ".join(f"{v} MiB" for v in VARIANTS)
             + " | first call s (generated / compiled reference) |", "|---|" + "---:|" * (2 * len(VARIANTS) + 1)]
    for entry in entries:
        ms, memory, first = entry["median_ms"], entry["transient_bytes"], entry["first_call_s"]
        lines.append(f"| {' x '.join(map(str, entry['size']))} | " + " | ".join(f"{ms[v]:.1f}" for v in VARIANTS)
                     + " | " + " | ".join(f"{memory[v] / 2**20:.1f}" for v in VARIANTS)
                     + f" | {first['generated_compiled']:.2f} / {first['compiled']:.2f} |")
    return lines
