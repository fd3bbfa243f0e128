"""``make bench``'s memory section: peak memory of value_and_grad in float32, bfloat16 and float16.

For every loss ``mlx.nn.losses`` also has, the four variants of the timing
section (the generated loss as called and compiled, MLX's autodiff eager and
compiled) are called once on the same inputs in each dtype, and the peak
allocation above the inputs is recorded. The issue's target: as called and
compiled, at most the better of MLX's two plus 2%. Plus the anchor the issue
names: cross_entropy at logits (512, 32000) in bfloat16, at most 63 MB.
cross_entropy is also measured against MLX's fused ``mx.fast.cross_entropy``
(its mean), eager and compiled: reported beside, not a target.
"""

from __future__ import annotations

import math

DTYPES = ("float32", "bfloat16", "float16")
MARGIN = 1.02  # "at most MLX's + 2%"
ANCHOR = {"loss": "cross_entropy", "shape": (512, 32000), "dtype": "bfloat16", "limit_mb": 63.0}


def peak_memory(fn, arrays):
    """Bytes allocated at the peak of one call, above what was held before it."""
    import mlx.core as mx

    mx.synchronize()
    mx.clear_cache()
    held = mx.get_active_memory()
    mx.reset_peak_memory()
    result = fn(*arrays)
    mx.eval(result)
    peak = mx.get_peak_memory()
    del result
    return max(peak - held, 0)


def _in_dtype(arrays, dtype):
    import mlx.core as mx

    return [a.astype(dtype) if mx.issubdtype(a.dtype, mx.floating) else a for a in arrays]


def measure_case(case, generated_fn, reference_fn, dtype_name):
    """Peak bytes of each variant's value_and_grad on ``case``'s arrays in ``dtype_name``."""
    import mlx.core as mx

    from .bench import VARIANTS

    arrays = _in_dtype(case.arrays, getattr(mx, dtype_name))
    mx.eval(arrays)
    fns = case.callables(generated_fn, reference_fn)["value_and_grad"]
    for name in VARIANTS:  # warm-up: compilation and first-call allocations are not the loss's
        mx.eval(fns[name](*arrays))
    return {name: peak_memory(fns[name], arrays) for name in VARIANTS}


def fast_cross_entropy_peaks(case, dtype_name):
    """Peak bytes of ``mx.fast.cross_entropy``'s value_and_grad (its mean, in the logits) on ``case``'s
    arrays, eager and compiled; None where this MLX has no such function."""
    import mlx.core as mx

    fast = getattr(getattr(mx, "fast", None), "cross_entropy", None)
    if fast is None:
        return None
    arrays = _in_dtype(case.arrays, getattr(mx, dtype_name))
    mx.eval(arrays)
    step = mx.value_and_grad(lambda logits, targets: fast(logits, targets).mean())
    fns = {"eager": step, "compiled": mx.compile(step)}
    for fn in fns.values():
        mx.eval(fn(*arrays))
    return {name: peak_memory(fn, arrays) for name, fn in fns.items()}


def anchor_case():
    """The cross_entropy call the issue gives a number for, as a bench Case."""
    import mlx.core as mx

    from .bench import Case

    rows, classes = ANCHOR["shape"]
    logits = mx.random.normal((rows, classes), key=mx.random.key(1))
    targets = mx.random.randint(0, classes, (rows,), key=mx.random.key(2))
    mx.eval(logits, targets)
    return Case(ANCHOR["loss"], rows * classes, ANCHOR["shape"], [logits, targets], [0])


def verdict(peaks):
    """How the generated variants compare with the better of MLX's two (a ratio each; 1 when both are 0)."""
    best = min(peaks["eager"], peaks["compiled"])

    def ratio(variant):
        if best == 0:
            return 1.0 if peaks[variant] == 0 else math.inf
        return peaks[variant] / best

    return {"as_called": ratio("generated"), "compiled": ratio("generated_compiled")}


def summarize(entries):
    """The targets of the memory section, each with the figure it is judged on."""
    ratios = [(e, verdict(e["peak_memory_bytes"])) for e in entries if e["kind"] == "loss"]
    checks = []
    for key, what in (("as_called", "generated"), ("compiled", "generated under mx.compile")):
        worst = max(ratios, key=lambda pair: pair[1][key]) if ratios else None
        if worst is not None:
            value = worst[1][key]
            checks.append({"target": f"{what}: peak memory / MLX's best, every loss and dtype, largest",
                           "value": value, "goal": f"<= {MARGIN}", "met": value <= MARGIN,
                           "worst": f"{worst[0]['loss']} {worst[0]['dtype']}",
                           "missed": sum(r[key] > MARGIN for _, r in ratios), "of": len(ratios)})
    for entry in entries:
        if entry["kind"] == "anchor":
            for variant, how in (("generated", "as called"), ("generated_compiled", "compiled")):
                mb = entry["peak_memory_bytes"][variant] / 1e6  # the unit: MB, not MiB
                checks.append({"target": f"{ANCHOR['loss']} {ANCHOR['shape']} {ANCHOR['dtype']} value_and_grad {how}, MB",
                               "value": mb, "goal": f"<= {ANCHOR['limit_mb']:g}", "met": mb <= ANCHOR["limit_mb"]})
    return checks


def run(specs, size, echo=print):
    """Every loss in every dtype at ``size`` elements, then the anchor call."""
    import mlx.core as mx
    import mlx.nn.losses as reference

    import generated

    from .bench import make_case

    entries = []
    for spec in specs:
        case = make_case(spec, size)
        for dtype in DTYPES:
            peaks = measure_case(case, getattr(generated, spec.name), getattr(reference, spec.name), dtype)
            entries.append({"kind": "loss", "loss": spec.name, "size": size, "dtype": dtype, "peak_memory_bytes": peaks})
            if spec.name == "cross_entropy":
                entries[-1]["fast_cross_entropy_bytes"] = fast_cross_entropy_peaks(case, dtype)
            echo(_progress(entries[-1]))
        del case
        mx.clear_cache()
    case = anchor_case()
    peaks = measure_case(case, getattr(generated, ANCHOR["loss"]), getattr(reference, ANCHOR["loss"]), ANCHOR["dtype"])
    entries.append({"kind": "anchor", "loss": ANCHOR["loss"], "shape": list(ANCHOR["shape"]),
                    "dtype": ANCHOR["dtype"], "peak_memory_bytes": peaks,
                    "fast_cross_entropy_bytes": fast_cross_entropy_peaks(case, ANCHOR["dtype"])})
    echo(_progress(entries[-1]))
    return entries


def _mb(n):
    return f"{n / 2**20:.1f}"


def _progress(entry):
    from .bench import VARIANTS

    peaks = entry["peak_memory_bytes"]
    return (f"{entry['loss']:24s} {entry['dtype']:9s} peak MiB " + " ".join(f"{k}={_mb(peaks[k])}" for k in VARIANTS))


def markdown(entries, checks):
    """The memory section of bench.md."""
    from .bench import VARIANTS

    lines = ["### peak memory of value_and_grad, by dtype (MiB above the inputs)", "",
             "| loss | dtype | " + " | ".join(VARIANTS) + " | generated / MLX's best | gen. compiled / MLX's best |",
             "|---|---|" + "---:|" * (len(VARIANTS) + 2)]
    for entry in entries:
        peaks, ratio = entry["peak_memory_bytes"], verdict(entry["peak_memory_bytes"])
        name = entry["loss"] if entry["kind"] == "loss" else f"{entry['loss']} {tuple(entry['shape'])}"
        lines.append(f"| {name} | {entry['dtype']} | " + " | ".join(_mb(peaks[k]) for k in VARIANTS)
                     + f" | {ratio['as_called']:.2f} | {ratio['compiled']:.2f} |")
    fast = [e for e in entries if e.get("fast_cross_entropy_bytes")]
    if fast:
        lines += ["", "cross_entropy against MLX's fused `mx.fast.cross_entropy` (its mean; on a CPU MLX runs it",
                  "unfused), value_and_grad, MiB above the inputs:", "",
                  "| call | dtype | generated | generated_compiled | mx.fast eager | mx.fast compiled |",
                  "|---|---|---:|---:|---:|---:|"]
        for entry in fast:
            peaks, theirs = entry["peak_memory_bytes"], entry["fast_cross_entropy_bytes"]
            call = f"{entry['size']} elements" if entry["kind"] == "loss" else f"{tuple(entry['shape'])}"
            lines.append(f"| {call} | {entry['dtype']} | {_mb(peaks['generated'])} | {_mb(peaks['generated_compiled'])} "
                         f"| {_mb(theirs['eager'])} | {_mb(theirs['compiled'])} |")
    lines += ["", "| memory target | value | goal | |", "|---|---:|---|---|"]
    for check in checks:
        detail = f" (worst: {check['worst']}; missed {check['missed']} of {check['of']})" if "worst" in check else ""
        lines.append(f"| {check['target']}{detail} | {check['value']:.2f} | {check['goal']} "
                     f"| {'met' if check['met'] else 'MISSED'} |")
    lines.append("")
    return "\n".join(lines)
