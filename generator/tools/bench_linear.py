"""``make bench``'s fused-linear section: ``linear_cross_entropy`` against the logits made whole.

At tokens x features x classes of 512 x 128 x 32768 and 256 x 128 x 131072, in
float32 and bfloat16, ``mx.compile(mx.value_and_grad(...))`` with respect to
the features and the head, against ``mlx.nn.losses.cross_entropy(hidden @
weight.T, targets)`` compiled and eager: time a step and peak memory, side by
side in one run. Transient memory is the peak less the returned gradients (the
inputs are held before the call and not counted). Targets (issue 16): the
generated form's transient memory at most 1/8 of compiled MLX's at the first
size and 1/16 at the second, and its time at least 0.95 of compiled MLX's.
"""

from __future__ import annotations

import time

SIZES = [(512, 128, 32768), (256, 128, 131072)]
QUICK_SIZES = [(64, 16, 1024)]
DTYPES = ("float32", "bfloat16")
VARIANTS = ("linear", "eager", "compiled")
MEMORY_GOALS = {SIZES[0]: 1 / 8, SIZES[1]: 1 / 16}
TIME_GOAL = 0.95


def _functions(targets):
    import mlx.core as mx
    import mlx.nn.losses as reference

    import generated

    def linear(hidden, weight):
        return generated.linear_cross_entropy(hidden, weight, targets, reduction="mean")

    def whole(hidden, weight):
        return reference.cross_entropy(hidden @ weight.T, targets, reduction="mean")

    step = lambda loss: mx.value_and_grad(loss, argnums=[0, 1])
    return {"linear": mx.compile(step(linear)), "eager": step(whole), "compiled": mx.compile(step(whole))}


def measure(size, dtype_name, rounds):
    """Median step time (ms) and transient peak memory (bytes) of each variant at ``size``."""
    import mlx.core as mx

    from .bench_memory import peak_memory

    tokens, features, classes = size
    dtype = getattr(mx, dtype_name)
    key = mx.random.key(0)
    hidden = (mx.random.normal((tokens, features), key=key)).astype(dtype)
    weight = (0.05 * mx.random.normal((classes, features), key=mx.random.key(1))).astype(dtype)
    targets = mx.random.randint(0, classes, (tokens,), key=mx.random.key(2))
    mx.eval(hidden, weight, targets)
    functions = _functions(targets)
    returned = hidden.nbytes + weight.nbytes
    times = {name: [] for name in VARIANTS}
    for name in VARIANTS:  # warm-up: compilation is not a step's
        mx.eval(functions[name](hidden, weight))
    for _ in range(rounds):
        for name in VARIANTS:
            start = time.perf_counter()
            mx.eval(functions[name](hidden, weight))
            times[name].append(time.perf_counter() - start)
    memory = {name: max(peak_memory(functions[name], [hidden, weight]) - returned, 0) for name in VARIANTS}
    values = {name: float(functions[name](hidden, weight)[0].astype(mx.float32).item()) for name in VARIANTS}
    return {"size": list(size), "dtype": dtype_name,
            "median_ms": {name: 1e3 * sorted(t)[len(t) // 2] for name, t in times.items()},
            "transient_bytes": memory, "loss": values}


def run(quick=False, echo=print):
    """Every size in every dtype."""
    entries = []
    for size in QUICK_SIZES if quick else SIZES:
        for dtype_name in DTYPES:
            entries.append(measure(size, dtype_name, 1 if quick else 3))
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


def _progress(entry):
    ms, memory = entry["median_ms"], entry["transient_bytes"]
    return (f"linear {'x'.join(map(str, entry['size'])):18s} {entry['dtype']:9s} "
            + " ".join(f"{k}={ms[k]:.0f}ms/{memory[k] / 2**20:.1f}MiB" for k in VARIANTS))


def markdown(entries, checks):
    """The section of bench.md."""
    lines = ["### fused linear + cross_entropy: value_and_grad in hidden and weight, compiled", "",
             "| tokens x features x classes | dtype | " + " | ".join(f"{v} ms" for v in VARIANTS)
             + " | " + " | ".join(f"{v} MiB" for v in VARIANTS) + " |",
             "|---|---|" + "---:|" * (2 * len(VARIANTS))]
    for entry in entries:
        ms, memory = entry["median_ms"], entry["transient_bytes"]
        lines.append(f"| {' x '.join(map(str, entry['size']))} | {entry['dtype']} | "
                     + " | ".join(f"{ms[v]:.0f}" for v in VARIANTS) + " | "
                     + " | ".join(f"{memory[v] / 2**20:.1f}" for v in VARIANTS) + " |")
    lines += ["", "Memory is transient: the peak above the inputs, less the returned gradients.", "",
              "| fused-linear target | value | goal | |", "|---|---:|---|---|"]
    for check in checks:
        lines.append(f"| {check['target']} | {check['value']:.3f} | {check['goal']} | "
                     f"{'met' if check['met'] else 'MISSED'} |")
    return lines
