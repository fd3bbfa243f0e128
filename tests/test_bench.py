"""`losscc bench --quick`: the report files are complete and well formed (no timing claims)."""

import json
import math

import matplotlib.image
import pytest
from click.testing import CliRunner

from generator.tools import bench
from generator.tools.cli import main

# One elementwise loss, one row-wise loss with integer targets, one with three float inputs.
LOSSES = ["mse_loss", "cross_entropy", "triplet_loss"]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    args = ["bench", "--quick", "--out", str(out)] + [arg for loss in LOSSES for arg in ("--loss", loss)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def report(report_dir):
    return json.loads((report_dir / "bench.json").read_text())


def _positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_every_loss_mode_and_variant_is_measured(report):
    measured = {(r["loss"], r["mode"]) for r in report["results"]}
    assert measured == {(loss, mode) for loss in LOSSES for mode in bench.MODES}
    for result in report["results"]:
        assert set(result["median_ms"]) == set(bench.VARIANTS)
        assert all(_positive(t) for t in result["median_ms"].values())
        assert set(result["speedup"]) == {label for label, _, _ in bench.SPEEDUPS}
        assert all(_positive(s) for s in result["speedup"].values())
        assert set(result["median_cpu_ms"]) == set(bench.VARIANTS) and set(result["speedup_cpu"]) == set(result["speedup"])
        assert all(_positive(s) for s in result["speedup_cpu"].values())
        assert all(isinstance(m, int) and m >= 0 for m in result["peak_memory_bytes"].values())
        assert result["rounds"] >= bench.QUICK["min_rounds"]
        assert result["size"] == math.prod(result["shape"])


def test_generated_results_agree_with_mlx_before_timing(report):
    # Values and gradients of the generated loss against mlx.nn.losses on the benchmark inputs.
    for result in report["results"]:
        assert result["max_relative_error"] < 1e-5, result


def test_summary_and_generate_time(report):
    assert _positive(report["generate_seconds"])
    summary = report["summary"]
    assert summary["size"] == bench.QUICK["sizes"][0]
    for mode in bench.MODES:
        for label, _, _ in bench.SPEEDUPS:
            assert _positive(summary[mode][label]["geometric_mean"])
    assert [t["target"] for t in summary["targets"]] == [t["target"] for t in summary["targets_cpu"]]
    for target in summary["targets"] + summary["targets_cpu"]:
        assert isinstance(target["met"], bool) and math.isfinite(target["value"]) and target["goal"]


def test_markdown_table_has_a_row_per_loss(report_dir):
    table = (report_dir / "bench.md").read_text()
    for mode in bench.MODES:
        assert f"### {mode}" in table
    timing, memory = table.split("### peak memory of value_and_grad, by dtype")
    rows = [line for line in timing.splitlines() if line.startswith("| ")]
    for loss in LOSSES:
        assert sum(line.startswith(f"| {loss} |") for line in memory.splitlines()) == 3  # a row per dtype
    for loss in LOSSES:
        assert sum(row.startswith(f"| {loss} |") for row in rows) == len(bench.MODES)
    assert table.count("**geometric mean**") == len(bench.MODES)


def test_plot_is_a_png_image(report_dir):
    path = report_dir / "speedup.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(path).shape
    assert height > 100 and width > 100


def test_peak_memory_is_reported_for_every_loss_in_every_dtype(report):
    from generator.tools import bench_memory

    entries = [e for e in report["memory"] if e["kind"] == "loss"]
    assert {(e["loss"], e["dtype"]) for e in entries} == {(loss, d) for loss in LOSSES for d in bench_memory.DTYPES}
    anchor, = [e for e in report["memory"] if e["kind"] == "anchor"]
    assert anchor["shape"] == list(bench_memory.ANCHOR["shape"]) and anchor["dtype"] == "bfloat16"
    for entry in report["memory"]:
        assert set(entry["peak_memory_bytes"]) == set(bench.VARIANTS)
        assert all(isinstance(m, int) and m >= 0 for m in entry["peak_memory_bytes"].values())
    # the anchor's gradient alone is a (512, 32000) bfloat16 array: every variant holds at least that
    assert min(anchor["peak_memory_bytes"].values()) >= 512 * 32000 * 2
    # cross_entropy's, the anchor's too, beside MLX's fused mx.fast.cross_entropy (which holds its gradient too)
    for entry in [e for e in report["memory"] if e["loss"] == "cross_entropy"]:
        fast = entry["fast_cross_entropy_bytes"]
        assert set(fast) == {"eager", "compiled"} and all(isinstance(m, int) and m > 0 for m in fast.values())
    assert min(anchor["fast_cross_entropy_bytes"].values()) >= 512 * 32000 * 2
    targets = report["summary"]["memory_targets"]
    assert len(targets) == 4 and all(isinstance(t["met"], bool) and math.isfinite(t["value"]) for t in targets)


def test_training_steps_follow_the_stock_loss(report, report_dir):
    from generator.tools import bench_training

    training = report["training"]
    if "skipped" in training:
        assert "mlx-lm" in training["skipped"] and "### training steps" in (report_dir / "bench.md").read_text()
        pytest.skip(training["skipped"])
    labels = [r["loss"] for r in training["results"]]
    assert labels == ["mlx.nn.losses.cross_entropy"] + [f"losscc {n}" for n in bench_training.LOSSES]
    for run in training["results"]:
        assert len(run["losses"]) == training["steps"] and all(math.isfinite(v) for v in run["losses"])
        assert _positive(run["median_step_ms"]) and run["peak_memory_bytes"] > 0
    # bfloat16 per-token losses (the stock loss's) against ours computed in float32: within bf16 rounding
    assert bench_training.curve_gap(training) < 1e-2 * abs(training["results"][0]["losses"][0])


def test_the_fused_linear_section_measures_each_variant(report, report_dir):
    from generator.tools import bench_linear

    entries = report["linear"]
    assert [(tuple(e["size"]), e["dtype"]) for e in entries] == [
        (size, dtype) for size in bench_linear.QUICK_SIZES for dtype in bench_linear.DTYPES] + [
        (bench_linear.QUICK_PREFERENCE_SIZE, "float32"), (bench_linear.QUICK_CONTRASTIVE_SIZE, "float32"),
        (bench_linear.QUICK_VIEWS_SIZE, "float32")]
    assert entries[-3]["preference"] == "dpo_loss" and entries[-2]["contrastive"] == "clip_loss"
    assert entries[-1]["contrastive"] == "nt_xent_loss"
    for entry in entries:
        assert all(_positive(entry["median_ms"][v]) for v in bench_linear.VARIANTS)
        assert all(isinstance(entry["transient_bytes"][v], int) for v in bench_linear.VARIANTS)
        losses = entry["loss"]
        tolerance = 1e-5 if entry["dtype"] == "float32" else 2e-2  # bfloat16: MLX rounds its logits' loss
        assert abs(losses["linear"] - losses["compiled"]) <= tolerance * abs(losses["compiled"])
    assert "### fused linear + a class loss" in (report_dir / "bench.md").read_text()


def test_the_ctc_section_measures_each_variant_on_the_same_loss(report, report_dir):
    from generator.tools import bench_ctc

    entry, = report["ctc"]
    assert tuple(entry["size"]) == bench_ctc.QUICK_SIZE
    assert all(_positive(entry["median_ms"][v]) and _positive(entry["first_call_s"][v]) for v in bench_ctc.VARIANTS)
    assert all(isinstance(entry["transient_bytes"][v], int) for v in bench_ctc.VARIANTS)
    losses = entry["loss"]  # the generated loss and the reference recursion: one value (float32 rounding)
    assert all(abs(losses[v] - losses["eager"]) <= 1e-5 * abs(losses["eager"]) for v in bench_ctc.VARIANTS)
    assert "### ctc_loss" in (report_dir / "bench.md").read_text()
