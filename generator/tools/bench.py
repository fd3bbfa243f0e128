"""``make bench``: speed and peak memory of the generated losses against mlx.nn.losses.

For every generated loss that ``mlx.nn.losses`` also has, four variants of the
same computation are timed side by side (``reduction="mean"``, float32):

* ``generated``: the generated loss, called as a user calls it;
* ``eager``: ``mlx.nn.losses`` differentiated by MLX's autodiff, not compiled;
* ``compiled``: ``mx.compile`` of the same;
* ``generated_compiled``: ``mx.compile`` of the generated loss.

Two modes: ``value_and_grad`` (w.r.t. every float array input) and
``forward`` (the loss alone). After warm-up the variants run interleaved,
one call of each per round, and every ratio is taken within a round before
the median over rounds, so that drift of the machine cancels. Peak memory is
``mx.get_peak_memory()`` above the memory held before the call (the inputs).
The generated results are checked against mlx.nn.losses before they are timed.

Then the peak memory of value_and_grad in float32, bfloat16 and float16
(``bench_memory``), linear_cross_entropy against the logits made whole
(``bench_linear``), ctc_loss against MLX's autodiff of the same recursion
(``bench_ctc``), and a few bfloat16 training steps of a small llama with each
class loss (``bench_training``).
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..spec.load import load_spec, spec_paths
from ..spec.vocabulary import ClassTarget, Input
from . import bench_ctc, bench_linear, bench_memory, bench_training

ROOT = Path(__file__).resolve().parents[2]  # the repository: `make bench` measures its generated/ package
RESULTS = ROOT / "bench" / "results"

VARIANTS = ("generated", "eager", "compiled", "generated_compiled")
MODES = ("value_and_grad", "forward")
# Speedups reported: (name, slower variant, faster variant) -> time(slower) / time(faster).
SPEEDUPS = (
    ("vs_eager", "eager", "generated"),
    ("vs_compiled", "compiled", "generated"),
    ("compiled_vs_compiled", "compiled", "generated_compiled"),
)
ROW = 1024  # the trailing axis: classes of a row-wise loss, and the row length of every input

# Rounds per measurement: at least min_rounds (2 at the largest size, where a round takes seconds),
# more while under budget_s (small sizes), at most max_rounds.
FULL = {"sizes": [2**16, 2**18, 2**20, 2**22, 2**24], "budget_s": 0.5, "min_rounds": 3, "max_rounds": 25,
        "warmup": 1}
QUICK = {"sizes": [2**12], "budget_s": 0.0, "min_rounds": 2, "max_rounds": 2, "warmup": 1}
TARGET_SIZE = 2**22

# Inputs drawn from the domain each loss is defined on; any other float input is standard normal.
DOMAINS = {
    ("binary_cross_entropy", "targets"): "unit",
    ("gaussian_nll_loss", "vars"): "positive",
    ("hinge_loss", "targets"): "sign",
    ("margin_ranking_loss", "targets"): "sign",
    ("kl_div_loss", "inputs"): "log_probabilities",
    ("kl_div_loss", "targets"): "log_probabilities",
}


@dataclass
class Case:
    """One loss at one size: its arrays and the callables of each variant and mode."""

    loss: str
    size: int
    shape: tuple
    arrays: list
    differentiable: list  # argnums of the float inputs

    def callables(self, generated_fn, reference_fn):
        import mlx.core as mx

        def generated(*arrays):
            return generated_fn(*arrays, reduction="mean")

        def reference(*arrays):
            return reference_fn(*arrays, reduction="mean")

        argnums = self.differentiable
        value_and_grad = {
            "generated": mx.value_and_grad(generated, argnums=argnums),
            "eager": mx.value_and_grad(reference, argnums=argnums),
            "compiled": mx.compile(mx.value_and_grad(reference, argnums=argnums)),
            "generated_compiled": mx.compile(mx.value_and_grad(generated, argnums=argnums)),
        }
        forward = {
            "generated": generated,
            "eager": reference,
            "compiled": mx.compile(reference),
            "generated_compiled": mx.compile(generated),
        }
        return {"value_and_grad": value_and_grad, "forward": forward}


def benchmark_losses(spec_dir=ROOT / "specs"):
    """The specs whose loss mlx.nn.losses also has, by name."""
    import mlx.nn.losses as reference

    specs = [load_spec(path) for path in spec_paths(spec_dir)]
    return [spec for spec in specs if callable(getattr(reference, spec.name, None))]


def make_case(spec, size, seed=0):
    """A :class:`Case` of ``spec``'s loss at ``size`` elements, its inputs drawn from their domains."""
    import mlx.core as mx

    key = mx.random.key(seed)
    shape = (size // ROW, ROW)
    arrays, differentiable = [], []
    for index, item in enumerate(spec.inputs):
        key, sub = mx.random.split(key)
        if isinstance(item, ClassTarget):
            arrays.append(mx.random.randint(0, ROW, shape[:-1], key=sub))
            continue
        item_shape = shape[:-1] if isinstance(item, Input) and item.per_row else shape
        arrays.append(_draw(DOMAINS.get((spec.name, item.name), "normal"), item_shape, sub))
        differentiable.append(index)
    mx.eval(arrays)
    return Case(spec.name, size, shape, arrays, differentiable)


def _draw(domain, shape, key):
    import mlx.core as mx

    if domain == "unit":
        return mx.random.uniform(shape=shape, key=key)
    if domain == "positive":
        return mx.random.uniform(0.1, 2.0, shape=shape, key=key)
    if domain == "sign":
        return mx.where(mx.random.bernoulli(shape=shape, key=key), 1.0, -1.0)
    values = mx.random.normal(shape, key=key)
    if domain == "log_probabilities":
        return values - mx.logsumexp(values, axis=-1, keepdims=True)
    return values


def _timed(fn, arrays):
    """(wall-clock seconds, CPU seconds of this process) of one evaluated call."""
    import mlx.core as mx

    wall, cpu = time.perf_counter(), time.process_time()
    mx.eval(fn(*arrays))
    return time.perf_counter() - wall, time.process_time() - cpu


def _relative_error(got, want):
    import mlx.core as mx

    got, want = got.astype(mx.float32), want.astype(mx.float32)
    scale = mx.max(mx.abs(want)).item()
    return mx.max(mx.abs(got - want)).item() / (scale if scale > 0 else 1.0)


def agreement(generated, reference):
    """Largest relative error of the generated value and gradients against mlx.nn.losses."""
    import mlx.core as mx

    if isinstance(generated, mx.array):
        generated, reference = [generated], [reference]
    pairs = []
    for got, want in zip(generated, reference):
        # value_and_grad gives (value, gradients); one argnum gives the gradient itself.
        if isinstance(got, mx.array):
            pairs.append((got, want))
        else:
            pairs.extend(zip(got, want))
    return max(_relative_error(got, want) for got, want in pairs)


def measure(fns, arrays, settings, rounds_at_least):
    """Interleaved timings of every variant; per-round ratios; peak memory.

    The first warm-up call of the generated loss and of mlx.nn.losses are
    compared before anything is timed.
    """
    import mlx.core as mx

    first = {}
    for _ in range(settings["warmup"]):
        for name in VARIANTS:
            result = fns[name](*arrays)
            mx.eval(result)
            first.setdefault(name, result)
    error = agreement(first["generated"], first["eager"])
    del first
    rounds = []
    start = time.perf_counter()
    while len(rounds) < settings["max_rounds"] and (
        len(rounds) < rounds_at_least or time.perf_counter() - start < settings["budget_s"]
    ):
        rounds.append({name: _timed(fns[name], arrays) for name in VARIANTS})

    def summary(clock):  # clock 0: wall, 1: CPU time of the process
        times = {name: statistics.median(r[name][clock] for r in rounds) * 1e3 for name in VARIANTS}
        speedups = {label: statistics.median(r[slow][clock] / max(r[fast][clock], 1e-9) for r in rounds)
                    for label, slow, fast in SPEEDUPS}
        return times, speedups

    (times, speedups), (cpu_times, cpu_speedups) = summary(0), summary(1)
    memory = {name: bench_memory.peak_memory(fns[name], arrays) for name in VARIANTS}
    return {"rounds": len(rounds), "median_ms": times, "speedup": speedups,
            "median_cpu_ms": cpu_times, "speedup_cpu": cpu_speedups,
            "peak_memory_bytes": memory, "max_relative_error": error}


def time_generate(spec_dir):
    """Wall time of a full generation in a fresh interpreter, written to a scratch folder."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "generator", "generate", "--specs", str(spec_dir), "--out",
             str(Path(scratch) / "generated")],
            cwd=ROOT, check=True, capture_output=True,
        )
        return time.perf_counter() - start


def run(quick=False, out=RESULTS, losses=None, sizes=None, spec_dir=ROOT / "specs", echo=print):
    """Run the benchmark; write ``bench.json``, ``bench.md`` and ``speedup.png`` under ``out``."""
    import mlx.core as mx
    import mlx.nn.losses as reference

    sys.path.insert(0, str(ROOT))
    import generated

    settings = dict(QUICK if quick else FULL)
    if sizes:
        settings["sizes"] = sorted(sizes)
    specs = [s for s in benchmark_losses(spec_dir) if not losses or s.name in losses]
    generate_s = time_generate(spec_dir)
    echo(f"make generate (all {len(spec_paths(spec_dir))} specs): {generate_s:.1f} s")

    results = []
    for spec in specs:
        for size in settings["sizes"]:
            case = make_case(spec, size)
            fns = case.callables(getattr(generated, spec.name), getattr(reference, spec.name))
            # The largest size gets fewer rounds: each takes seconds there.
            least = settings["min_rounds"] if size < max(settings["sizes"]) or len(settings["sizes"]) == 1 else 2
            for mode in MODES:
                entry = measure(fns[mode], case.arrays, settings, least)
                entry.update(loss=spec.name, size=size, shape=list(case.shape), mode=mode)
                results.append(entry)
                echo(_progress(entry))
            del case, fns
            mx.clear_cache()

    report = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "python": platform.python_version(), "mlx": mx.__version__,
                    "device": str(mx.default_device())},
        "settings": {**settings, "dtype": "float32", "reduction": "mean", "row_length": ROW,
                     "variants": list(VARIANTS), "quick": quick},
        "generate_seconds": generate_s,
        "results": results,
    }
    report["summary"] = summarize(results, _summary_size(settings["sizes"]))
    echo("")
    report["memory"] = bench_memory.run(specs, _summary_size(settings["sizes"]), echo=echo)
    report["summary"]["memory_targets"] = bench_memory.summarize(report["memory"])
    echo("")
    report["linear"] = bench_linear.run(quick=quick, echo=echo)
    report["summary"]["linear_targets"] = bench_linear.summarize(report["linear"])
    echo("")
    report["ctc"] = bench_ctc.run(quick=quick, echo=echo)
    echo("")
    if bench_training.available():
        report["training"] = bench_training.run(quick=quick, echo=echo)
    else:
        report["training"] = {"skipped": "mlx-lm is not installed (the bench extra: pip install -e '.[bench]')"}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    (out / "bench.md").write_text(table)
    plot(report, out / "speedup.png")
    echo("")
    echo(table)
    echo(f"written: {out / 'bench.json'}, {out / 'bench.md'}, {out / 'speedup.png'}")
    return report


def _summary_size(sizes):
    return TARGET_SIZE if TARGET_SIZE in sizes else max(sizes)


def _progress(entry):
    t = entry["median_ms"]
    s = entry["speedup"]
    return (f"{entry['loss']:24s} {entry['size']:>9d} {entry['mode']:15s} "
            + " ".join(f"{k}={t[k]:.2f}ms" for k in VARIANTS)
            + f"  x{s['vs_eager']:.2f} eager, x{s['vs_compiled']:.2f} compiled")


def geometric_mean(values):
    """The geometric mean of positive ``values`` (the mean of ratios)."""
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def summarize(results, size):
    """Geometric means and the issue's targets at ``size``."""
    summary = {"size": size}
    for mode in MODES:
        rows = [r for r in results if r["mode"] == mode and r["size"] == size]
        if not rows:
            continue
        summary[mode] = {
            label: {"geometric_mean": geometric_mean(r["speedup"][label] for r in rows),
                    "min": min(r["speedup"][label] for r in rows),
                    "geometric_mean_cpu": geometric_mean(r["speedup_cpu"][label] for r in rows),
                    "min_cpu": min(r["speedup_cpu"][label] for r in rows)}
            for label, _, _ in SPEEDUPS
        }
    rows = [r for r in results if r["mode"] == "value_and_grad" and r["size"] == size]
    if rows:
        summary["targets"] = targets(rows, "speedup")
        summary["targets_cpu"] = targets(rows, "speedup_cpu")
    return summary


def targets(rows, speedup="speedup"):
    """The issue's value_and_grad targets, each with the figure it is judged on.

    "Against compiled autodiff" is judged twice: the generated loss as called
    (``vs_compiled``) and the generated loss under ``mx.compile`` as well
    (``compiled_vs_compiled``).
    """
    def speedups(label):
        return {r["loss"]: r[speedup][label] for r in rows}

    def memory(variant):
        return {r["loss"]: r["peak_memory_bytes"][variant] / r["peak_memory_bytes"]["compiled"]
                if r["peak_memory_bytes"]["compiled"] else float(r["peak_memory_bytes"][variant] == 0)
                for r in rows}

    checks = [("generated faster than eager autodiff, every loss", min(speedups("vs_eager").values()), "> 1", 1.0,
               False)]
    checks.append(("generated vs eager autodiff, geometric mean", geometric_mean(speedups("vs_eager").values()),
                   ">= 2", 2.0, True))
    for label, what in (("vs_compiled", "generated"), ("compiled_vs_compiled", "generated under mx.compile")):
        checks.append((f"{what} vs compiled autodiff, geometric mean", geometric_mean(speedups(label).values()),
                       ">= 1.2", 1.2, True))
        checks.append((f"{what} vs compiled autodiff, slowest loss", min(speedups(label).values()),
                       ">= 0.95", 0.95, True))
    for variant, what in (("generated", "generated"), ("generated_compiled", "generated under mx.compile")):
        checks.append((f"{what}: peak memory / compiled autodiff's, largest", max(memory(variant).values()),
                       "<= 1", 1.0, None))
    result = []
    for name, value, goal, bound, inclusive in checks:
        if inclusive is None:
            met = value <= bound
        else:
            met = value >= bound if inclusive else value > bound
        result.append({"target": name, "value": value, "goal": goal, "met": met})
    return result


def _mb(n):
    return f"{n / 2**20:.1f}"


def markdown(report):
    """The report as markdown: the summary size in detail, then speedup by size."""
    summary = report["summary"]
    size = summary["size"]
    lines = [f"## losscc benchmark: float32, reduction='mean', {size} elements (rows x {ROW})", "",
             "Variants: *generated* (the generated loss as called), *eager* (mlx.nn.losses, MLX autodiff), "
             "*compiled* (`mx.compile` of the same), *gen. compiled* (`mx.compile` of the generated loss). "
             "Times are medians over interleaved rounds; each ratio (time of the other / time of the generated) "
             "is the median of the ratios taken within a round. Peak memory is above the inputs.", "",
             f"`make generate` (all specs): {report['generate_seconds']:.1f} s", ""]
    for mode in MODES:
        rows = [r for r in report["results"] if r["mode"] == mode and r["size"] == size]
        if not rows:
            continue
        lines += [f"### {mode}", "",
                  "| loss | generated ms | eager ms | compiled ms | gen. compiled ms "
                  "| generated vs eager | generated vs compiled | gen. compiled vs compiled "
                  "| peak MiB generated / eager / compiled / gen. compiled |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            t, s, m = r["median_ms"], r["speedup"], r["peak_memory_bytes"]
            lines.append(
                f"| {r['loss']} | {t['generated']:.2f} | {t['eager']:.2f} | {t['compiled']:.2f} "
                f"| {t['generated_compiled']:.2f} | {s['vs_eager']:.2f} | {s['vs_compiled']:.2f} "
                f"| {s['compiled_vs_compiled']:.2f} | " + " / ".join(_mb(m[k]) for k in VARIANTS) + " |"
            )
        g = summary[mode]
        lines.append(f"| **geometric mean** | | | | | **{g['vs_eager']['geometric_mean']:.2f}** "
                     f"| **{g['vs_compiled']['geometric_mean']:.2f}** "
                     f"| **{g['compiled_vs_compiled']['geometric_mean']:.2f}** | |")
        lines.append(f"| geometric mean, CPU time | | | | | {g['vs_eager']['geometric_mean_cpu']:.2f} "
                     f"| {g['vs_compiled']['geometric_mean_cpu']:.2f} "
                     f"| {g['compiled_vs_compiled']['geometric_mean_cpu']:.2f} | |")
        lines.append("")
    if "targets" in summary:
        lines += [f"### targets (value_and_grad at {size} elements)", "",
                  "Judged on wall-clock time, and on the CPU time of the benchmark process (steadier where "
                  "other jobs share the machine).", "",
                  "| target | wall clock | CPU time | goal | |", "|---|---:|---:|---|---|"]
        for wall, cpu in zip(summary["targets"], summary["targets_cpu"]):
            verdict = {(True, True): "met", (False, False): "MISSED"}.get((wall["met"], cpu["met"]), "mixed")
            lines.append(f"| {wall['target']} | {wall['value']:.3f} | {cpu['value']:.3f} | {wall['goal']} | {verdict} |")
        generate = report["generate_seconds"]
        lines += [f"| make generate, all specs (s) | {generate:.1f} | | < 30 | {'met' if generate < 30 else 'MISSED'} |",
                  ""]
    if "memory" in report:
        lines.append(bench_memory.markdown(report["memory"], summary["memory_targets"]))
    if "linear" in report:
        lines += bench_linear.markdown(report["linear"], summary["linear_targets"]) + [""]
    if "ctc" in report:
        lines += bench_ctc.markdown(report["ctc"]) + [""]
    training = report.get("training", {})
    lines.append(bench_training.markdown(training) if "results" in training
                 else f"### training steps\n\nSkipped: {training.get('skipped', 'not run')}\n")
    sizes = sorted({r["size"] for r in report["results"]})
    if len(sizes) > 1:
        lines += ["### value_and_grad speedup (generated vs compiled; gen. compiled vs compiled), by size", "",
                  "| loss | " + " | ".join(f"2^{int(math.log2(s))}" for s in sizes) + " |",
                  "|---|" + "---:|" * len(sizes)]
        by = {(r["loss"], r["size"]): r for r in report["results"] if r["mode"] == "value_and_grad"}
        for loss in dict.fromkeys(r["loss"] for r in report["results"]):
            lines.append(f"| {loss} | " + " | ".join(
                f"{by[loss, s]['speedup']['vs_compiled']:.2f}; {by[loss, s]['speedup']['compiled_vs_compiled']:.2f}"
                if (loss, s) in by else "" for s in sizes) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(report, path):
    """Speedup against size, one panel per loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = list(dict.fromkeys(r["loss"] for r in report["results"]))
    columns = 4
    rows = math.ceil(len(losses) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    series = [("value_and_grad", "vs_eager", "value+grad vs eager"),
              ("value_and_grad", "vs_compiled", "value+grad vs compiled"),
              ("value_and_grad", "compiled_vs_compiled", "value+grad, both compiled"),
              ("forward", "vs_compiled", "forward vs compiled")]
    for axis, loss in zip(axes.flat, losses):
        for mode, label, title in series:
            points = sorted((r["size"], r["speedup"][label]) for r in report["results"]
                            if r["loss"] == loss and r["mode"] == mode)
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=title)
        axis.axhline(1.0, color="grey", linewidth=0.8)
        axis.set_xscale("log", base=2)
        axis.set_title(loss, fontsize=10)
        axis.set_xlabel("elements")
        axis.set_ylabel("speedup")
    for axis in list(axes.flat)[len(losses):]:
        axis.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower right")
    figure.suptitle("generated loss speedup (time of other / time of generated), float32, reduction='mean'")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
