"""The loss catalogue: every spec gets a page, a plot and an index row; the plotted curves are right.

The catalogue of specs/ is built once (into a temporary folder). The curves are
compared with NumPy formulas written here from the losses' definitions.
"""

import re

import numpy as np
import pytest
from matplotlib.image import imread

from generator.render import render_package
from generator.spec.load import load_spec, spec_paths
from generator.tools import catalog, plots
from generator.tools.catalog import imported_package
from tests.helpers import ROOT, build_package

SPECS = ROOT / "specs"
NAMES = [path.stem for path in spec_paths(SPECS)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("catalogue") / "catalog"
    return out, catalog.build(SPECS, out)


@pytest.fixture(scope="module")
def package():
    with imported_package(render_package(SPECS)) as module:
        yield module


def curve_of(name, package):
    return plots.curve(load_spec(SPECS / f"{name}.py"), getattr(package, name))


# ---------------------------------------------------------------- files

def test_the_index_names_every_loss_once(built):
    out, names = built
    assert names == NAMES
    index = (out / "index.md").read_text()
    rows = [line for line in index.splitlines() if line.startswith("| [`")]
    assert [re.match(r"\| \[`(\w+)`\]\((\w+)\.md\)", row).groups() for row in rows] == [(n, n) for n in NAMES]


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_has_a_page_with_formula_gradient_and_plot(built, name):
    out, _ = built
    text = (out / f"{name}.md").read_text()
    loss = load_spec(SPECS / f"{name}.py")
    assert f"# {name}\n" in text
    assert text.count("```math") >= 2  # at least the loss and one gradient
    assert "## Formula" in text and "## Gradient" in text and "## Kinks" in text
    if loss.kind == "recurrence":  # the step and the derived backward step
        assert r"\alpha_{t}(s) = " in text and r"\beta_{t}(s) = " in text
    else:
        assert r"\ell = " in text and r"\frac{\partial \ell}{\partial" in text
    for param in loss.params:
        assert f"- {param.name} (" in text  # every parameter is documented
    assert f"![{name}: loss and gradient]({name}.png)" in text
    image = imread(out / f"{name}.png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_page_links_point_at_existing_files(built):
    out, _ = built
    for page in out.glob("*.md"):
        for target in re.findall(r"\]\(([^)]+)\)", page.read_text()):
            assert (out / target).exists(), f"{page.name} links to missing {target}"


def test_pages_inside_the_repository_link_relatively():
    out = ROOT / "docs" / "catalog"
    assert catalog._link(ROOT / "specs" / "huber_loss.py", out) == "../../specs/huber_loss.py"


def test_a_page_carries_the_spec_s_words(built):
    text = (built[0] / "huber_loss.md").read_text()
    assert "huber_loss(inputs, targets, delta=1.0, reduction='none', *, group=None)" in text
    assert "at |error| == delta both branches have slope" in text
    assert "error = inputs - targets" in text
    assert "drop-in for `mlx.nn.losses.huber_loss`" in text


def test_build_refuses_to_replace_a_folder_that_is_not_a_catalogue(tmp_path):
    (tmp_path / "keep.md").write_text("mine")
    with pytest.raises(ValueError, match="not a catalogue"):
        catalog.build(SPECS, tmp_path)
    assert (tmp_path / "keep.md").read_text() == "mine"


# ---------------------------------------------------------------- curves

def test_huber_is_plotted_against_the_residual(package):
    curve = curve_of("huber_loss", package)
    assert curve.x_label == "inputs - targets" and curve.wrt == "inputs"
    r = curve.x
    np.testing.assert_allclose(curve.loss, np.where(np.abs(r) <= 1, r**2 / 2, np.abs(r) - 0.5), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(curve.gradient, np.clip(r, -1, 1), rtol=1e-6, atol=1e-7)


def test_binary_cross_entropy_is_plotted_against_the_logit_of_a_positive(package):
    curve = curve_of("binary_cross_entropy", package)
    assert curve.x_label == "inputs" and "targets = 1" in curve.held
    z = curve.x
    np.testing.assert_allclose(curve.loss, np.logaddexp(0, -z), rtol=1e-5)
    np.testing.assert_allclose(curve.gradient, 1 / (1 + np.exp(-z)) - 1, rtol=1e-5, atol=1e-7)


def test_margin_ranking_is_plotted_against_the_score_difference(package):
    curve = curve_of("margin_ranking_loss", package)
    assert curve.x_label == "inputs1 - inputs2" and "targets = 1" in curve.held
    d = curve.x
    np.testing.assert_allclose(curve.loss, np.maximum(0, -d), atol=1e-6)
    away_from_kink = np.abs(d) > 1e-3
    np.testing.assert_allclose(curve.gradient[away_from_kink], np.where(d < 0, -1.0, 0.0)[away_from_kink])


def test_cross_entropy_is_plotted_against_the_target_logit(package):
    curve = curve_of("cross_entropy", package)
    assert curve.x_label == "logits[0]" and "targets = class 0" in curve.held
    rows = np.tile(plots.fixed_row(0, "signed").astype(np.float64), (len(curve.x), 1))
    rows[:, 0] = curve.x
    log_normaliser = np.log(np.exp(rows).sum(axis=1))
    np.testing.assert_allclose(curve.loss, log_normaliser - rows[:, 0], rtol=1e-5)
    np.testing.assert_allclose(curve.gradient, np.exp(rows[:, 0] - log_normaliser) - 1, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_every_curve_is_finite_and_its_gradient_is_the_slope(package, name):
    curve = curve_of(name, package)
    assert np.isfinite(curve.loss).all() and np.isfinite(curve.gradient).all()
    # Between grid points where the gradient barely changes (no kink), the
    # loss's secant slope must equal the mean of the gradient at both ends.
    step = curve.x[1] - curve.x[0]
    secant = np.diff(curve.loss.astype(np.float64)) / step
    mean_gradient = (curve.gradient[1:] + curve.gradient[:-1]) / 2
    smooth = np.abs(np.diff(curve.gradient)) < 0.05 * (1 + np.abs(mean_gradient))
    # A bend of the gradient (a C1 kink such as squared_hinge_loss's) breaks the trapezoid rule too.
    bend = np.abs(np.diff(curve.gradient, n=2)) > 0.01 * (1 + np.abs(curve.gradient[1:-1]))
    smooth[1:] &= ~bend
    smooth[:-1] &= ~bend
    assert smooth.mean() > 0.9
    np.testing.assert_allclose(secant[smooth], mean_gradient[smooth], rtol=1e-2, atol=1e-3)


POISSON = """
from sympy import log
from generator.spec import Input, Loss
inputs, targets = Input("inputs"), Input("targets")
spec = Loss("rate_loss", inputs=[inputs, targets], elementwise=inputs - targets * log(inputs))
"""

KL_ON_PROBABILITIES = """
from sympy import log
from generator.spec import Input, Loss, RowSum
inputs, targets = Input("inputs"), Input("targets", differentiable=False)
spec = Loss("divergence_loss", inputs=[inputs, targets], axis=-1,
            row=RowSum(targets * (log(targets) - inputs)))
"""


def test_an_elementwise_plot_narrows_to_where_the_loss_is_finite(tmp_path):
    package = build_package(tmp_path, {"rate_loss": POISSON})
    curve = plots.curve(load_spec(tmp_path / "specs" / "rate_loss.py"), package.rate_loss)
    assert curve.x_label == "inputs" and "targets = 1" in curve.held
    assert 0 < curve.x.min() < 0.05 and curve.x.max() == 4.0  # log(inputs): (0, 4]
    np.testing.assert_allclose(curve.loss, curve.x - np.log(curve.x), rtol=1e-5)
    np.testing.assert_allclose(curve.gradient, 1 - 1 / curve.x, rtol=1e-5, atol=1e-6)


def test_a_rowwise_plot_falls_back_to_probability_rows(tmp_path):
    package = build_package(tmp_path, {"divergence_loss": KL_ON_PROBABILITIES})
    curve = plots.curve(load_spec(tmp_path / "specs" / "divergence_loss.py"), package.divergence_loss)
    targets = plots.fixed_row(1, "probabilities").astype(np.float64)
    assert np.all(targets > 0) and abs(targets.sum() - 1) < 0.02
    assert any(h.startswith("targets = [0.") for h in curve.held)
    inputs = np.tile(plots.fixed_row(0, "probabilities").astype(np.float64), (len(curve.x), 1))
    inputs[:, 0] = curve.x
    np.testing.assert_allclose(curve.loss, (targets * (np.log(targets) - inputs)).sum(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(curve.gradient, -targets[0], rtol=1e-6)


DICE = """
from generator.spec import Input, Loss, RowSum
inputs, targets = Input("inputs"), Input("targets")
spec = Loss("overlap_loss", inputs=[inputs, targets], axis=-1,
            row=1 - (2 * RowSum(inputs * targets) + 1) / (RowSum(inputs) + RowSum(targets) + 1))
"""


def test_a_rowwise_plot_with_a_pole_on_signed_rows_uses_probability_rows(tmp_path):
    package = build_package(tmp_path, {"overlap_loss": DICE})
    curve = plots.curve(load_spec(tmp_path / "specs" / "overlap_loss.py"), package.overlap_loss)
    assert 0 < curve.x.min() and curve.x.max() < 1
    inputs = np.tile(plots.fixed_row(0, "probabilities").astype(np.float64), (len(curve.x), 1))
    inputs[:, 0] = curve.x
    targets = plots.fixed_row(1, "probabilities").astype(np.float64)
    overlap, total = (inputs * targets).sum(axis=1), inputs.sum(axis=1) + targets.sum() + 1
    np.testing.assert_allclose(curve.loss, 1 - (2 * overlap + 1) / total, rtol=1e-5)
    np.testing.assert_allclose(curve.gradient, -(2 * targets[0] * total - (2 * overlap + 1)) / total**2, rtol=1e-4)


def test_kinks_are_the_spec_s_words_else_where_the_formula_has_them():
    """A formula with branches and no kinks= is not called smooth: the places where it switches are named."""
    from generator.describe import kinks_text

    assert kinks_text(load_spec(SPECS / "huber_loss.py")) == load_spec(SPECS / "huber_loss.py").kinks.strip()
    assert kinks_text(load_spec(SPECS / "mse_loss.py")) == "None: the loss is smooth where it is defined."
    expectile = kinks_text(load_spec(SPECS / "expectile_loss.py"))
    assert expectile.startswith("Not documented") and "inputs - targets <= 0" in expectile
    assert "alpha" not in kinks_text(load_spec(SPECS / "sigmoid_focal_loss.py"))  # a parameter's branch is no kink


def _normalised_rows(curve, seed):
    """The varied log-probability rows of a curve: log q[0] along the axis, the rest of the row
    (``fixed_row``) rescaled so that the probabilities sum to 1."""
    rest = np.exp(plots.fixed_row(seed, "log_probabilities").astype(np.float64)[1:])
    q0 = np.exp(curve.x)[:, None]
    return np.log(np.concatenate([q0, rest / rest.sum() * (1 - q0)], axis=1))


@pytest.mark.parametrize("name", ["jensen_shannon_divergence", "kl_div_loss"])
def test_divergences_are_plotted_on_log_probability_rows_within_their_bounds(package, name):
    """A divergence of two distributions is in [0, log 2] (Jensen-Shannon) or >= 0 (Kullback-Leibler):
    on rows of signed values, which are no distributions, the plots left those bounds."""
    curve = curve_of(name, package)
    assert -8 < curve.x.min() and curve.x.max() < 0
    q, p = np.exp(_normalised_rows(curve, 0)), np.exp(plots.fixed_row(1, "log_probabilities").astype(np.float64))
    if name == "kl_div_loss":
        expected = (p * (np.log(p) - np.log(q))).sum(axis=1)
    else:
        m = (p + q) / 2
        expected = 0.5 * (p * np.log(p / m)).sum(axis=1) + 0.5 * (q * np.log(q / m)).sum(axis=1)
        assert expected.max() <= np.log(2)
    assert expected.min() >= 0
    np.testing.assert_allclose(curve.loss, expected, rtol=1e-4, atol=1e-5)


WING = """
from sympy import Abs, Piecewise, log
from generator.spec import Input, Loss, Param
inputs, targets = Input("inputs"), Input("targets")
w, eps = Param("w", 10.0), Param("eps", 2.0)
error = Abs(inputs - targets)
spec = Loss("wing_loss", inputs=[inputs, targets], params=[w, eps],
            elementwise=Piecewise((w * log(1 + error / eps), error < w), (error - (w - w * log(1 + w / eps)), True)))
"""


def test_the_axis_spans_the_kinks_the_parameters_place(tmp_path):
    """A wing loss with w = 10 turns linear at |x - y| = 10: the axis reaches twice that, not 4."""
    package = build_package(tmp_path, {"wing_loss": WING})
    curve = plots.curve(load_spec(tmp_path / "specs" / "wing_loss.py"), package.wing_loss)
    r = curve.x
    assert r.min() == -20 and r.max() == 20
    linear = np.abs(r) > 10
    np.testing.assert_allclose(curve.gradient[linear], np.sign(r[linear]), rtol=1e-6)
    np.testing.assert_allclose(curve.gradient[~linear], 10 / (2 + np.abs(r[~linear])) * np.sign(r[~linear]), rtol=1e-5)
