"""The losscc command line, through click's test runner: every command, good and bad arguments.

Commands run on copies of a few specs in temporary folders, so the repository's
specs/ and generated/ are never written. What a command produced is checked
against independent oracles (mlx.nn.losses, NumPy formulas), not against itself.
"""

import importlib
import shutil
import sys
import uuid

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from click.testing import CliRunner

from generator.spec.load import spec_paths
from generator.tools.cli import main
from tests.helpers import ROOT

SPECS = ROOT / "specs"
COMMANDS = ("new", "generate", "check", "list", "show", "doc")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def specs(tmp_path):
    """A spec folder with one elementwise and one row-wise loss from specs/."""
    folder = tmp_path / "specs"
    folder.mkdir()
    for name in ("huber_loss", "cross_entropy"):
        shutil.copy(SPECS / f"{name}.py", folder)
    return folder


@pytest.fixture
def package_dir(tmp_path):
    """Where to generate a package: a fresh importable name in its own folder."""
    return tmp_path / "pkg" / f"losses_{uuid.uuid4().hex[:8]}"


def import_package(folder):
    sys.path.insert(0, str(folder.parent))
    try:
        return importlib.import_module(folder.name)
    finally:
        sys.path.remove(str(folder.parent))


def files_of(folder):
    return {p.name: p.read_text() for p in sorted(folder.glob("*.py"))}


# ---------------------------------------------------------------- the group

def test_help_names_every_command():
    result = run("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


def test_unknown_command_is_a_usage_error():
    result = run("frobnicate")
    assert result.exit_code == 2
    assert "No such command" in result.output


# ---------------------------------------------------------------- new

@pytest.mark.parametrize("rowwise", [False, True])
def test_new_writes_a_spec_that_compiles_and_computes_its_formula(tmp_path, package_dir, rowwise):
    folder = tmp_path / "specs"
    result = run("new", "my_loss", "--specs", folder, *(["--rowwise"] if rowwise else []))
    assert result.exit_code == 0, result.output
    text = (folder / "my_loss.py").read_text()
    assert '"my_loss"' in text and "#" in text  # named, and commented
    assert run("generate", "--specs", folder, "--out", package_dir).exit_code == 0
    my_loss = import_package(package_dir).my_loss
    rng = np.random.default_rng(0)
    if rowwise:  # the template: cross entropy of logits / temperature, mean over rows
        logits, targets = rng.normal(size=(6, 5)).astype(np.float32), rng.integers(0, 5, size=6)
        scaled = logits / 2.0
        rows = np.log(np.exp(scaled).sum(axis=1)) - scaled[np.arange(6), targets]
        value = my_loss(mx.array(logits), mx.array(targets), temperature=2.0)
    else:  # the template: scale * (e**2 if |e| < 1 else 2|e| - 1), mean
        predictions, targets = rng.normal(size=50).astype(np.float32), rng.normal(size=50).astype(np.float32)
        e = np.abs(predictions.astype(np.float64) - targets)
        rows = 3.0 * np.where(e < 1, e**2, 2 * e - 1)
        value = my_loss(mx.array(predictions), mx.array(targets), scale=3.0)
    np.testing.assert_allclose(value.item(), rows.mean(), rtol=1e-5)


def test_new_refuses_to_overwrite(tmp_path):
    folder = tmp_path / "specs"
    assert run("new", "my_loss", "--specs", folder).exit_code == 0
    (folder / "my_loss.py").write_text("# my work\n")
    result = run("new", "my_loss", "--specs", folder, "--rowwise")
    assert result.exit_code == 1
    assert "already exists" in result.output
    assert (folder / "my_loss.py").read_text() == "# my work\n"


@pytest.mark.parametrize("name", ["1abc", "my-loss", "class", "_private", "my loss"])
def test_new_rejects_a_name_that_is_not_an_identifier(tmp_path, name):
    result = run("new", name, "--specs", tmp_path)
    assert result.exit_code == 2
    assert "Invalid value for NAME" in result.output
    assert not any(tmp_path.iterdir())


def test_new_rejects_a_name_the_spec_refuses(tmp_path):
    # The template declares an input named `predictions`: a loss of that name would clash.
    result = run("new", "predictions", "--specs", tmp_path)
    assert result.exit_code == 1
    assert "predictions" in result.output and "reserved" in result.output
    assert not any(tmp_path.iterdir())


def test_new_needs_a_name():
    assert run("new").exit_code == 2


# ---------------------------------------------------------------- generate

def test_generate_writes_a_package_that_matches_mlx(specs, package_dir):
    result = run("generate", "--specs", specs, "--out", package_dir)
    assert result.exit_code == 0, result.output
    # each loss owns its module and its kernels; the package adds __init__, _runtime, _linear,
    # _distributed, _lattice, _gpu, kernels/__init__
    assert "generated 2 losses into" in result.output and "11 files changed" in result.output
    package = import_package(package_dir)
    rng = np.random.default_rng(1)
    x, y = (mx.array(rng.normal(size=(4, 7)).astype(np.float32)) for _ in range(2))
    np.testing.assert_allclose(package.huber_loss(x, y, delta=0.5), nn.losses.huber_loss(x, y, delta=0.5), rtol=1e-6)
    labels = mx.array(rng.integers(0, 7, size=4))
    np.testing.assert_allclose(package.cross_entropy(x, labels), nn.losses.cross_entropy(x, labels), rtol=1e-5)


def test_generate_shows_a_progress_bar_on_a_terminal_only(specs, package_dir):
    terminal = CliRunner(env={"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}).invoke(
        main, ["generate", "--specs", str(specs), "--out", str(package_dir)]
    )
    assert terminal.exit_code == 0
    assert "2/2" in terminal.output and "generated 2 losses" in terminal.output
    piped = run("generate", "--specs", specs, "--out", package_dir)
    assert "\x1b" not in piped.output and len(piped.output.splitlines()) == 1


def test_generate_again_changes_nothing(specs, package_dir):
    run("generate", "--specs", specs, "--out", package_dir)
    result = run("generate", "--specs", specs, "--out", package_dir)
    assert result.exit_code == 0
    assert "nothing changed" in result.output


def test_generate_names_compiles_only_those(specs, package_dir):
    assert run("generate", "--specs", specs, "--out", package_dir).exit_code == 0
    for name in ("huber_loss", "cross_entropy"):
        path = specs / f"{name}.py"
        path.write_text(path.read_text().replace('doc="Computes the', 'doc="Edited: computes the'))
    result = run("generate", "huber_loss", "--specs", specs, "--out", package_dir)
    assert result.exit_code == 0, result.output
    assert "(1 compiled, 1 kept)" in result.output
    assert "Edited: computes the Huber" in (package_dir / "huber_loss.py").read_text()
    assert "Edited" not in (package_dir / "cross_entropy.py").read_text()
    stale = run("check", "--specs", specs, "--out", package_dir)
    assert stale.exit_code == 1
    assert "cross_entropy.py" in stale.output and "huber_loss.py" not in stale.output


def test_generate_names_compiles_a_loss_missing_from_the_package(specs, package_dir):
    shutil.copy(SPECS / "mse_loss.py", specs)
    (specs / "mse_loss.py").rename(specs / "mse_loss.py.off")
    assert run("generate", "--specs", specs, "--out", package_dir).exit_code == 0
    (specs / "mse_loss.py.off").rename(specs / "mse_loss.py")
    result = run("generate", "huber_loss", "--specs", specs, "--out", package_dir)
    assert result.exit_code == 0, result.output
    assert "(2 compiled, 1 kept)" in result.output
    assert run("check", "--specs", specs, "--out", package_dir).exit_code == 0


def test_generate_an_unknown_name_suggests_close_ones(specs, package_dir):
    result = run("generate", "hubr_loss", "--specs", specs, "--out", package_dir)
    assert result.exit_code == 1
    assert "no spec named 'hubr_loss'" in result.output and "huber_loss" in result.output
    assert not package_dir.exists()


def test_generate_with_a_broken_spec_names_it_and_writes_nothing(specs, package_dir):
    assert run("generate", "--specs", specs, "--out", package_dir).exit_code == 0
    before = files_of(package_dir)
    (specs / "broken_loss.py").write_text("from generator.spec import Input, Loss\nx = Input('x')\nspec = Loss('broken_loss', inputs=[x], elementwise=x + y)\n")
    result = run("generate", "--specs", specs, "--out", package_dir)
    assert result.exit_code == 1
    assert "broken_loss.py" in result.output and "line 3" in result.output
    assert files_of(package_dir) == before


def test_generate_keeps_each_spec_s_own_terms(tmp_path, package_dir):
    # Two specs naming a term alike with different definitions: each module computes its own.
    folder = tmp_path / "specs"
    folder.mkdir()
    for name, scale in (("once_loss", 1), ("twice_loss", 2)):
        (folder / f"{name}.py").write_text(
            "from generator.spec import Input, Loss, Term\n"
            "p, t = Input('predictions'), Input('targets')\n"
            f"error = Term('error', {scale} * (p - t))\n"
            f"spec = Loss('{name}', inputs=[p, t], elementwise=error**2)\n"
        )
    assert run("generate", "--specs", folder, "--out", package_dir).exit_code == 0
    package = import_package(package_dir)
    p, t = mx.array([3.0]), mx.array([1.0])
    assert package.once_loss(p, t).item() == 4.0
    assert package.twice_loss(p, t).item() == 16.0


def test_generate_needs_an_existing_spec_folder_with_specs(tmp_path, package_dir):
    missing = run("generate", "--specs", tmp_path / "nowhere", "--out", package_dir)
    assert missing.exit_code == 2
    empty = run("generate", "--specs", tmp_path, "--out", package_dir)
    assert empty.exit_code == 1 and "no spec files" in empty.output
    assert not package_dir.exists()


# ---------------------------------------------------------------- check

def test_check_passes_on_a_fresh_package_and_names_an_edited_file(specs, package_dir):
    run("generate", "--specs", specs, "--out", package_dir)
    fresh = run("check", "--specs", specs, "--out", package_dir)
    assert fresh.exit_code == 0 and "up to date" in fresh.output
    module = package_dir / "huber_loss.py"
    module.write_text(module.read_text() + "# edited by hand\n")
    stale = run("check", "--specs", specs, "--out", package_dir)
    assert stale.exit_code == 1
    assert "stale" in stale.output and "huber_loss.py" in stale.output


def test_check_fails_on_a_missing_package(specs, package_dir):
    result = run("check", "--specs", specs, "--out", package_dir)
    assert result.exit_code == 1 and "__init__.py" in result.output


# ---------------------------------------------------------------- list

def _row(output, name):
    return next(line for line in output.splitlines() if f" {name} " in line)


def test_list_is_a_table_of_every_spec():
    result = run("list")
    assert result.exit_code == 0
    for column in ("name", "kind", "inputs", "parameters", "backends"):
        assert column in result.output
    for path in spec_paths(SPECS):
        assert f" {path.stem} " in result.output
    huber = _row(result.output, "huber_loss")
    assert "elementwise" in huber and "inputs, targets" in huber and "delta=1.0" in huber and "mlx" in huber
    entropy = _row(result.output, "cross_entropy")
    assert "rowwise" in entropy and "targets (class)" in entropy and "[weights]" in entropy
    assert "label_smoothing=0.0" in entropy


def test_list_names_a_broken_spec(specs):
    (specs / "broken_loss.py").write_text("spec = 1\n")
    result = run("list", "--specs", specs)
    assert result.exit_code == 1
    assert "broken_loss.py" in result.output and "spec = Loss" in result.output


# ---------------------------------------------------------------- show

def test_show_prints_formula_gradient_kinks_and_files():
    result = run("show", "huber_loss")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "huber_loss(inputs, targets, delta=1.0, reduction='none', *, group=None)" in out
    assert "error = inputs - targets" in out
    assert "Gradient" in out and "sign(error)" in out and "d loss/d targets" in out
    assert "at |error| == delta" in out  # the spec's kink convention
    assert "generated/huber_loss.py  (up to date)" in out


def test_show_latex_of_a_rowwise_loss():
    result = run("show", "cross_entropy", "--latex")
    assert result.exit_code == 0, result.output
    assert r"\mathrm{logsumexp}_j" in result.output
    assert r"\frac{\partial \ell}{\partial logits_j}" in result.output
    assert "one-hot row" in result.output


def test_show_tells_a_stale_or_missing_module(specs, package_dir):
    missing = run("show", "huber_loss", "--specs", specs, "--out", package_dir)
    assert missing.exit_code == 0 and "missing: run `losscc generate huber_loss`" in missing.output
    run("generate", "--specs", specs, "--out", package_dir)
    module = package_dir / "huber_loss.py"
    module.write_text(module.read_text().replace("Huber", "Hubber"))
    stale = run("show", "huber_loss", "--specs", specs, "--out", package_dir)
    assert "stale: run `losscc generate huber_loss`" in stale.output


def test_show_an_unknown_loss_suggests_close_ones():
    result = run("show", "cross_entropi")
    assert result.exit_code == 1
    assert "no spec named 'cross_entropi'" in result.output and "cross_entropy" in result.output


def test_show_an_unrelated_name_suggests_new():
    result = run("show", "zzz")
    assert result.exit_code == 1 and "losscc new zzz" in result.output


def test_show_needs_a_name():
    assert run("show").exit_code == 2


# ---------------------------------------------------------------- doc

def test_doc_builds_pages_plots_and_index(specs, tmp_path):
    out = tmp_path / "catalog"
    result = run("doc", "--specs", specs, "--out", out)
    assert result.exit_code == 0, result.output
    assert "built the catalogue of 2 losses" in result.output
    index = (out / "index.md").read_text()
    for name in ("huber_loss", "cross_entropy"):
        assert f"[`{name}`]({name}.md)" in index
        assert (out / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    assert run("doc", "--specs", specs, "--out", out).exit_code == 0  # rebuilding replaces it


def test_doc_refuses_to_replace_a_folder_that_is_not_a_catalogue(specs, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run("doc", "--specs", specs, "--out", tmp_path)
    assert result.exit_code == 1
    assert "not a catalogue" in result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"
