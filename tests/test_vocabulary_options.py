"""The vocabulary added for the catalogue: keyword-only options, optional parameters, class weights, logaddexp.

Each is a feature of the spec language, not of one loss: tested here on small
specs of their own, plus the promise that matters most to users, that MLX's
signatures stay exactly as they are.
"""

import inspect

import mlx.core as mx
import mlx.nn.losses as mlx_losses
import numpy as np
import pytest

import generated as losscc
from generator.spec import ClassTarget, ClassWeights, Flag, Gather, Input, Loss, Param, SpecError
from tests.helpers import build_package


def _parameters(function):
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("name, options", [
    ("cross_entropy", [("ignore_index", None), ("lse_square_scale", 0.0), ("group", None), ("class_group", None)]),
    ("nll_loss", [("ignore_index", None), ("group", None), ("class_group", None)]),
    ("binary_cross_entropy", [("label_smoothing", 0.0), ("group", None)]),
])
def test_new_options_are_keyword_only_after_mlx_s_exact_signature(name, options):
    ours = _parameters(getattr(losscc, name))
    assert ours[: len(ours) - len(options)] == _parameters(getattr(mlx_losses, name))
    assert ours[len(ours) - len(options):] == [(n, inspect.Parameter.KEYWORD_ONLY, d) for n, d in options]


def test_a_keyword_only_option_cannot_be_passed_positionally():
    logits, targets = mx.zeros((2, 3)), mx.array([0, 1])
    with pytest.raises(TypeError):
        losscc.cross_entropy(logits, targets, None, -1, 0.0, "none", -100)


SCALED = """
from generator.spec import Flag, Input, Loss, Param, Select
x, y = Input("inputs"), Input("targets")
scale = Param("scale", 2.0, keyword_only=True)
negate = Flag("negate", False, keyword_only=True)
shift = Param("shift", 0.0)
spec = Loss("scaled_loss", inputs=[x, y], params=[scale, negate, shift], reduction="none",
            elementwise=Select(negate, -1, 1) * scale * (x - y) ** 2 + shift)
"""


def test_keyword_only_params_and_flags_follow_reduction(tmp_path):
    package = build_package(tmp_path, {"scaled_loss": SCALED})
    assert str(inspect.signature(package.scaled_loss)) == (
        "(inputs, targets, shift=0.0, reduction='none', *, scale=2.0, negate=False, group=None)")
    x, y = mx.array([1.0, 3.0]), mx.array([0.0, 1.0])
    np.testing.assert_allclose(np.array(package.scaled_loss(x, y, 1.0, scale=0.5, negate=True)), [0.5, -1.0])


WEIGHTED = """
from generator.spec import ClassTarget, ClassWeights, Gather, Input, Loss, RowSum
x = Input("inputs")
t = ClassTarget("targets")
w = ClassWeights("weight")
spec = Loss("weighted_pick", inputs=[x, t, w], axis=-1, reduction="none",
            row=Gather(w, t) * RowSum(w * x))
"""


def test_class_weights_lie_along_the_loss_axis(tmp_path):
    package = build_package(tmp_path, {"weighted_pick": WEIGHTED})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 2))  # classes along axis 1
    t = rng.integers(0, 4, (3, 2))
    w = rng.uniform(0.5, 2, 4)
    ours = package.weighted_pick(mx.array(x, dtype=mx.float64), mx.array(t), mx.array(w, dtype=mx.float64), axis=1)
    expected = w[t] * np.einsum("nck,c->nk", x, w)
    np.testing.assert_allclose(np.array(ours), expected, rtol=1e-12)
    assert str(inspect.signature(package.weighted_pick)) == "(inputs, targets, weight=None, axis=-1, reduction='none', *, group=None, class_group=None)"


EXPONENTIAL_MIX = """
from generator.spec import Input, Loss, logaddexp
x, y = Input("inputs"), Input("targets")
spec = Loss("softmax_pair", inputs=[x, y], reduction="none", elementwise=logaddexp(x, y))
"""


def test_logaddexp_is_stable_and_its_gradient_is_a_sigmoid(tmp_path):
    package = build_package(tmp_path, {"softmax_pair": EXPONENTIAL_MIX})
    x = np.array([1000.0, -1000.0, 0.5, -3.0], dtype=np.float32)
    y = np.array([999.0, -1001.0, 0.5, 40.0], dtype=np.float32)
    loss = package.softmax_pair(mx.array(x), mx.array(y))
    np.testing.assert_allclose(np.array(loss), np.logaddexp(x.astype(np.float64), y.astype(np.float64)), rtol=1e-6)
    grad_x, grad_y = mx.grad(lambda a, b: mx.sum(package.softmax_pair(a, b)), argnums=(0, 1))(mx.array(x), mx.array(y))
    sigmoid = 1 / (1 + np.exp(-(x.astype(np.float64) - y)))
    np.testing.assert_allclose(np.array(grad_x), sigmoid, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(np.array(grad_y), 1 - sigmoid, rtol=1e-6, atol=1e-12)
    infinite = package.softmax_pair(mx.array([-np.inf, np.inf, -np.inf]), mx.array([-np.inf, 1.0, 2.0]))
    np.testing.assert_array_equal(np.array(infinite), [-np.inf, np.inf, 2.0])


# ---------------------------------------------------------------- spec errors

def test_an_optional_param_cannot_appear_in_the_formula(tmp_path):
    from generator.derive import derive

    x, t = Input("inputs"), ClassTarget("targets")
    ignore = Param("ignore_index", None, integer=True)
    loss = Loss("bad_loss", inputs=[x, t], params=[ignore], axis=-1, row=-Gather(x, t) * ignore)
    with pytest.raises(SpecError, match="ignore_index.*no default value"):
        derive(loss)


def test_integer_true_contradicting_a_float_default_is_refused():
    with pytest.raises(SpecError, match="contradicts its default"):
        Param("k", 1.5, integer=True)


def test_positional_class_weights_must_come_after_the_other_inputs():
    x, y = Input("inputs"), Input("targets")
    with pytest.raises(SpecError, match="cannot follow the optional class weights"):
        Loss("bad_loss", inputs=[x, ClassWeights("weight"), y], elementwise=x - y)
    # keyword-only class weights may be declared anywhere
    Loss("fine_loss", inputs=[x, ClassWeights("weight", keyword_only=True), y], elementwise=x - y)


def test_a_target_s_generated_names_are_reserved_but_ignore_index_is_not():
    x, t = Input("inputs"), ClassTarget("targets")
    with pytest.raises(SpecError, match="targets_index"):
        Loss("bad_loss", inputs=[x, t], params=[Param("targets_index", 1)], axis=-1, row=-Gather(x, t))
    ignore = Param("ignore_index", None, integer=True)
    t = ClassTarget("targets", ignore_index=ignore)
    Loss("fine_loss", inputs=[x, t], params=[ignore], axis=-1, row=-Gather(x, t))


def test_keyword_only_flag_declaration():
    flag = Flag("swap", False, keyword_only=True)
    assert flag.keyword_only and not Flag("swap", False).keyword_only
