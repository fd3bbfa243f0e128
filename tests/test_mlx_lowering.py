"""The MLX lowering's cheaper forms keep the values they replace.

Oracles: float64 NumPy for the runtime's elementary functions and class
scatters; the SymPy expression itself (lambdified in float64) for the
rewrites and for printed code, on fresh random inputs.
"""

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import mlx.core as mx
from generated import _runtime as rt
from generator.backends.mlx.printer import print_program
from generator.ir import COTANGENT
from generator.lower.residuals import RECOMPUTE_BUDGET
from generator.lower.rewrite import cheaper, extremum
from generator.lower.schedule import schedule
from generator.spec import Param
from generator.spec.functions import maximum, relu

RNG = np.random.default_rng(7)
GENERATED = Path(__file__).resolve().parent.parent / "generated"
FLOAT32_EPS = np.finfo(np.float32).eps


def _wide(n=200_000):
    """Finite values over the whole useful range, and some exactly representable small ones."""
    return np.concatenate([RNG.normal(0, 3, n), RNG.uniform(-90, 90, n), [0.0, -0.0, 1e-30, -1e-30, 1e-8]])


def _relative_error(got, want):
    got = np.asarray(got, dtype=np.float64)
    return np.max(np.abs(got - want) / np.maximum(np.abs(want), np.finfo(np.float32).tiny))


@pytest.mark.parametrize(
    "ours, mlx_own, reference",
    [
        (rt.exp, mx.exp, np.exp),
        (rt.sigmoid, mx.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
        (rt.softplus, lambda x: mx.logaddexp(x, 0.0), lambda x: np.logaddexp(x, 0)),
    ],
    ids=["exp", "sigmoid", "softplus"],
)
def test_elementary_functions_are_as_accurate_as_mlx_own(ours, mlx_own, reference):
    x32 = _wide().astype(np.float32)
    want = reference(x32.astype(np.float64))
    x = mx.array(x32)
    ours_error = _relative_error(ours(x), want)
    mlx_error = _relative_error(mlx_own(x), want)
    assert ours_error <= max(2 * mlx_error, 4 * FLOAT32_EPS), (ours_error, mlx_error)


def test_logcosh_absolute_error_is_float32_rounding():
    # log(cosh(x)) = |x| + log1p(exp(-2|x|)) - log 2 cancels near 0 (as MLX's logaddexp form does):
    # the error is absolute, a few ulps of log 2 at most.
    x32 = _wide().astype(np.float32)
    want = np.logaddexp(x32.astype(np.float64), -x32.astype(np.float64)) - math.log(2)
    error = np.abs(np.asarray(rt.logcosh(mx.array(x32)), dtype=np.float64) - want)
    assert np.all(error <= 4 * FLOAT32_EPS * np.maximum(1.0, np.abs(want)))


def test_elementary_functions_at_the_extremes():
    x = mx.array([-math.inf, -1e30, -100.0, 100.0, 1e30, math.inf, math.nan])
    exp = np.asarray(rt.exp(x))
    assert np.array_equal(exp[[0, 1, 3, 4, 5, 6]], [0, 0, np.inf, np.inf, np.inf, np.nan], equal_nan=True)
    assert 0 <= exp[2] < 1e-40  # exp(-100) = 3.7e-44, a float32 subnormal (MLX's exp flushes it to 0)
    assert np.array_equal(np.asarray(rt.sigmoid(x)), [0, 0, 0, 1, 1, 1, np.nan], equal_nan=True)
    softplus = np.asarray(rt.softplus(x))
    assert softplus[0] == 0 and softplus[5] == math.inf and softplus[4] == np.float32(1e30)
    assert 0 <= softplus[2] < 1e-40 and math.isnan(softplus[6])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_class_scatters_match_a_one_hot_reference(axis):
    shape = (3, 5, 4)
    dense = RNG.normal(size=shape).astype(np.float32)
    classes = RNG.integers(0, shape[axis], size=[1 if d == axis else n for d, n in enumerate(shape)])
    value = RNG.normal(size=classes.shape).astype(np.float32)
    one_hot = np.arange(shape[axis]).reshape([-1 if d == axis else 1 for d in range(3)]) == classes
    value[RNG.random(classes.shape) < 0.3] = np.nan  # a row whose class is outside it: NaN at its stand-in
    added = rt.add_at_class(mx.array(dense), mx.array(classes), mx.array(value), axis)
    placed = rt.at_class(mx.array(dense), mx.array(classes), mx.array(value), axis)
    np.testing.assert_allclose(np.asarray(added), dense + np.where(one_hot, value, 0.0), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(placed), np.where(one_hot, value, 0.0))


x, y, a, c = sp.symbols("x y a c", real=True)
positive = sp.Symbol("positive", positive=True)


def _agree(before, after, symbols, points=2000):
    """Both expressions evaluate to the same values (NaN where both are NaN) at random points."""
    values = [RNG.normal(0, 2, points) for _ in symbols]
    values[-1] = np.abs(values[-1]) + 0.1 if symbols[-1] is positive else values[-1]
    want = sp.lambdify(symbols, before, "numpy")(*values)
    got = sp.lambdify(symbols, after, "numpy")(*values)
    np.testing.assert_allclose(np.broadcast_to(got, want.shape), want, rtol=1e-12, atol=1e-12)


def test_saturation_becomes_a_clip():
    huber_gradient = sp.Piecewise((x - y, sp.Abs(x - y) <= positive), (positive * sp.sign(x - y), True))
    rewritten = cheaper(huber_gradient, finite={x, y, positive})
    assert not rewritten.has(sp.Piecewise) and rewritten.has(sp.Min) and rewritten.has(sp.Max)
    _agree(huber_gradient, rewritten, [x, y, positive])


def test_rewrites_dividing_by_a_parameter_that_may_be_0_keep_the_original_at_0():
    beta = Param("beta", 1.0, range="[0, inf)")
    smooth_l1 = sp.Piecewise(((x - y) ** 2 / (2 * beta), sp.Abs(x - y) < beta), (sp.Abs(x - y) - beta / 2, True))
    rewritten = cheaper(smooth_l1, finite={x, y, beta})
    assert rewritten.has(sp.Min) and rewritten.has(sp.Ne(beta, 0))
    for value in (0.0, 0.3, 2.0):
        _agree(smooth_l1.subs(beta, value), rewritten.subs(beta, value), [x, y])


def test_finite_selection_of_zero_becomes_a_mask_but_an_infinite_one_does_not():
    masked = cheaper(c * sp.Piecewise((-y, x * y < 1), (0, True)), finite={x, y, c})
    assert masked.has(sp.Piecewise((1, x * y < 1), (0, True)))
    _agree(c * sp.Piecewise((-y, x * y < 1), (0, True)), masked, [x, y, c])
    singular = sp.Piecewise((1 / x, x > y), (0, True))  # 0 * (1/0) would be NaN where 0 is meant
    assert cheaper(singular, finite={x, y}) == singular


def test_maximum_is_recognised_and_kept():
    assert extremum(maximum(x, y)) == ("max", x, y)
    assert extremum(relu(1 - x * y))[0] == "max"
    assert extremum(sp.Piecewise((x, x < y), (y, True))) == ("min", x, y)
    assert extremum(sp.Piecewise((x, x > 2 * y), (y, True))) is None
    assert cheaper(relu(x - y), finite={x, y}) == relu(x - y)


@pytest.mark.parametrize(
    "expr",
    [
        COTANGENT * (2 * x - 2 * y),
        -COTANGENT * x * sp.Piecewise((1, x * y < 1), (0, True)) + 3,
        COTANGENT * sp.Piecewise((x - y, sp.Abs(x - y) <= a), (a * sp.sign(x - y), True)),
        maximum(1 - x * y, 0) - maximum(y, a) / 2,
        sp.Abs(x) ** a * sp.sign(x) / sp.Abs(x) * COTANGENT,
    ],
    ids=["factored", "mask", "clip", "maxima", "powers"],
)
def test_printed_code_computes_the_expression(expr):
    statements = schedule({}, [("out", expr)])
    lines = print_program(statements, {}, {x, y, COTANGENT}, [x, y], like="x")
    values = {"x": RNG.normal(0, 2, 1000), "y": RNG.normal(0, 2, 1000), "cotangent": 0.37, "a": 0.8}
    scope = {"mx": mx, "math": math, "rt": rt, "compute": mx.float32}
    scope.update({k: mx.array(v, dtype=mx.float32) if isinstance(v, np.ndarray) else mx.array(v) for k, v in values.items()})
    scope["a"] = values["a"]  # a parameter is a Python float
    exec("\n".join(lines), scope)
    want = sp.lambdify([x, y, COTANGENT, a], expr, "numpy")(values["x"], values["y"], values["cotangent"], values["a"])
    np.testing.assert_allclose(np.asarray(scope["out"], dtype=np.float64), want, rtol=2e-6, atol=2e-6)


def _costly_calls(function):
    """The text of every call in ``function`` that costs far more than arithmetic on a CPU."""
    costly = {"mx.exp", "mx.log", "mx.log1p", "mx.sqrt", "mx.power", "mx.tanh",
              "rt.exp", "rt.sigmoid", "rt.softplus", "rt.logaddexp", "rt.logcosh"}
    calls = (node for node in ast.walk(function) if isinstance(node, ast.Call))
    return {ast.unparse(call) for call in calls if ast.unparse(call.func) in costly}


@pytest.mark.parametrize("module", sorted(p.stem for p in GENERATED.glob("*.py") if not p.stem.startswith("_")))
def test_the_backward_reads_what_the_forward_computed_at_a_cost(module):
    # Under mx.grad MLX runs compiled functions op by op: a log or exp of the inputs both programs
    # print is paid twice. An elementwise loss's float32 forward hands it over (a residual) to its
    # backward; the other backwards (``_recomputing`` and a row-wise loss's, which holds per-row values
    # alone) compute it again rather than hold a float32 array the size of the input, within the
    # budget. (A costly call on per-row values is cheap.)
    tree = ast.parse((GENERATED / f"{module}.py").read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    for name, forward in functions.items():
        if name.startswith("_forward"):
            backward = functions[name.replace("_forward", "_backward", 1)]
            inputs = {a.arg for a in backward.args.args[:len(_given(backward))]}
            on_inputs = {call for call in _costly_calls(forward) & _costly_calls(backward)
                         if {n.id for n in ast.walk(ast.parse(call)) if isinstance(n, ast.Name)} & inputs}
            holding = f"{backward.name}_recomputing" in functions
            assert not on_inputs if holding else len(on_inputs) <= RECOMPUTE_BUDGET, (name, on_inputs)


def _given(function):
    """The inputs a generated backward names as given (its ``given = (...)`` tuple)."""
    for node in function.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "given":
            return node.value.elts
    return []


