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
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    for loss in LOSSES:
        assert sum(row.startswith(f"| {loss} |") for row in rows) == len(bench.MODES)
    assert table.count("**geometric mean**") == len(bench.MODES)


def test_plot_is_a_png_image(report_dir):
    path = report_dir / "speedup.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(path).shape
    assert height > 100 and width > 100
