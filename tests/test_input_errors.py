"""Bad arguments to a generated loss: a ValueError naming the argument, what was given and what is expected.

Every scenario runs for every loss in specs/ whose signature has the argument
concerned. Where mlx.nn.losses raises its own ValueError for the same call,
its message must appear verbatim in ours (so code matching MLX's messages
keeps working); messages of MLX's core ops ("[broadcast_shapes] ...") are
not required.
"""

from __future__ import annotations

import inspect
import re

import mlx.core as mx
import mlx.nn.losses
import numpy as np
import pytest

from generator.spec import Flag, Input
from tests.arguments import LOSSES, MLX_LOSSES, element_inputs, make_call, ours, theirs
from tests.helpers import build_package


def _said(name):
    """How a parameter is named in a message (MLX: "Label smoothing must be in ...")."""
    return name.replace("_", " ").capitalize()


def _sentence(name):
    return name[:1].upper() + name[1:]


def _show(value):
    return "inf" if value == np.inf else "-inf" if value == -np.inf else repr(int(value)) if float(value).is_integer() else repr(value)


def _scenarios(loss):
    """(id, function(call, args) -> fragments the message must hold), for every argument of ``loss``."""
    first = loss.inputs[0].name

    def reduction(call, args):
        args["reduction"] = "average"
        return ["Invalid reduction. Must be one of ('none', 'mean', 'sum').", "'average'"]

    yield "reduction", reduction

    def complex_predictions(call, args):
        args[first] = args[first].astype(mx.complex64)
        return [_sentence(first), "real dtype", "complex64"]

    yield f"{first}-complex", complex_predictions

    for item in loss.inputs:
        def not_an_array(call, args, name=item.name):
            args[name] = "abc"
            return [_sentence(name), "must be an array", "str"]

        yield f"{item.name}-not-an-array", not_an_array

    for item in element_inputs(loss)[1:]:
        def mismatch(call, args, name=item.name):
            shape = args[first].shape
            bad = shape[:-1] + (shape[-1] + 1,)
            args[name] = mx.zeros(bad)
            if loss.broadcast:
                return ["cannot be broadcast", f"{first} shape {shape}", f"{name} shape {bad}"]
            return [f"{_sentence(first)} shape {shape}", f"{name} shape {bad}"]

        yield f"{item.name}-shape", mismatch

    for item in loss.inputs:
        if isinstance(item, Input) and item.per_row:
            def row_shape(call, args, name=item.name):
                args[name] = mx.zeros(args[name].shape + (2,))
                return [f"{_sentence(name)} shape", "does not match the loss shape"]

            yield f"{item.name}-shape", row_shape

    for target in loss.class_targets:
        def float_indices(call, args, name=target.name):
            args[name] = args[name].astype(mx.float32) + 0.5
            return [_sentence(name), "integer class indices", "float32"]

        def index_shape(call, args, name=target.name):
            args[name] = mx.zeros((args[name].shape[0] + 2,), dtype=mx.int32)
            return [f"{_sentence(name)} shape {args[name].shape}", f"{first} shape {args[first].shape}"]

        yield f"{target.name}-float-indices", float_indices
        yield f"{target.name}-shape", index_shape
        if target.probabilities:
            def probability_shape(call, args, name=target.name):
                shape = args[first].shape
                args[name] = mx.full(shape[:-1] + (shape[-1] + 1,), 0.25)
                return [f"{_sentence(name)} shape {args[name].shape}", f"{first} shape {shape}"]

            yield f"{target.name}-probabilities-shape", probability_shape

    if loss.weights is not None:
        def weights_shape(call, args, name=loss.weights.name):
            args[name] = mx.ones((7,))
            return [f"{_sentence(name)} with shape (7,) is not the same as output loss with shape"]

        yield "weights-shape", weights_shape

    for p in loss.params:
        if isinstance(p, Flag):
            def flag(call, args, name=p.name):
                args[name] = "yes"
                return [f"{_said(name)} must be True or False, got 'yes'."]

            yield f"{p.name}-not-bool", flag
            continue

        def not_a_number(call, args, name=p.name):
            args[name] = "big"
            return [_said(name), "must be a", "'big'"]

        yield f"{p.name}-not-a-number", not_a_number
        r = p.range
        interval = f"{'(' if r.low_open else '['}{_show(r.low)}, {_show(r.high)}{')' if r.high_open else ']'}"
        for label, bound, is_open, step in (("below", r.low, r.low_open, -1), ("above", r.high, r.high_open, 1)):
            if not np.isfinite(bound):
                continue
            bad = bound if is_open else bound + step * (1 if p.integer else 0.5)
            bad = int(bad) if p.integer else float(bad)

            def out_of_range(call, args, name=p.name, bad=bad, interval=interval):
                args[name] = bad
                return [f"{_said(name)} must be in {interval}, got {bad}."]

            yield f"{p.name}-{label}-range", out_of_range
        if p.integer:
            def fraction(call, args, name=p.name, bad=(p.default or 0) + 0.5):  # an optional one defaults to None
                args[name] = bad
                return [_said(name), "must be an integer", repr(bad)]

            yield f"{p.name}-fraction", fraction

    if loss.kind == "rowwise":
        def axis_too_big(call, args):
            ndim = args[first].ndim
            args["axis"] = ndim
            return [f"Axis {ndim} is out of range for {first} with {ndim} dimensions", f"-{ndim} <= axis < {ndim}"]

        def axis_too_small(call, args):
            ndim = args[first].ndim
            args["axis"] = -ndim - 1
            return [f"Axis {-ndim - 1} is out of range for {first}", f"-{ndim} <= axis < {ndim}"]

        def axis_not_int(call, args):
            args["axis"] = 1.0
            return ["Axis must be an integer, got 1.0."]

        def zero_dimensional(call, args):
            for item in element_inputs(loss):
                args[item.name] = mx.array(0.5)
            return [_sentence(first), "at least one dimension", "0-d"]

        yield "axis-too-big", axis_too_big
        yield "axis-too-small", axis_too_small
        yield "axis-not-int", axis_not_int
        yield "zero-dimensional", zero_dimensional


# The start of each message mlx.nn.losses writes itself (up to its first placeholder).
MLX_MESSAGES = tuple(sorted(set(
    re.findall(r'raise ValueError\(\s*f?"([^"{]+)', inspect.getsource(mlx.nn.losses))
)))


def _written_by_mlx_losses(message):
    return message.startswith(MLX_MESSAGES)


CASES = [pytest.param(name, scenario, id=f"{name}-{sid}") for name in LOSSES for sid, scenario in _scenarios(LOSSES[name])]


@pytest.mark.parametrize("name,scenario", CASES)
def test_bad_argument_gives_a_value_error_that_says_what_and_why(name, scenario):
    call = make_call(LOSSES[name], np.random.default_rng(0), (3, 4))
    args = {**call.mx_arrays(), **call.kwargs(), "reduction": "mean"}
    fragments = scenario(call, args)
    with pytest.raises(ValueError) as raised:
        mx.eval(ours(name)(**args))
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"

    if name in MLX_LOSSES:
        try:
            mx.eval(theirs(name)(**args))
        except ValueError as error:
            if _written_by_mlx_losses(str(error)):  # not a core op's message
                assert str(error) in message, f"MLX's message {str(error)!r} not in {message!r}"
        except Exception:  # MLX fails otherwise (AttributeError, IndexError): ours is the clear one
            pass


def test_every_message_mlx_losses_writes_is_reached():
    """The scenarios reach each ValueError written in mlx.nn.losses, so the test above compares them all."""
    reached = set()
    for name in MLX_LOSSES:
        for _, scenario in _scenarios(LOSSES[name]):
            call = make_call(LOSSES[name], np.random.default_rng(0), (3, 4))
            args = {**call.mx_arrays(), **call.kwargs(), "reduction": "mean"}
            scenario(call, args)
            try:
                mx.eval(theirs(name)(**args))
            except ValueError as error:
                reached.update(m for m in MLX_MESSAGES if str(error).startswith(m))
            except Exception:
                pass
    assert len(MLX_MESSAGES) >= 7 and set(MLX_MESSAGES) == reached, set(MLX_MESSAGES) - reached


def test_probability_targets_of_the_wrong_dtype_name_both_forms():
    loss = next((l for l in LOSSES.values() if any(t.probabilities for t in l.class_targets)), None)
    if loss is None:
        pytest.skip("no loss takes probability targets")
    call = make_call(loss, np.random.default_rng(0), (3, 4))
    target = loss.class_targets[0].name
    args = {**call.mx_arrays(), **call.kwargs()}
    args[target] = mx.full((3,), 1.5)
    with pytest.raises(ValueError, match="or floating-point probabilities of the shape of .* \\(3, 4\\)"):
        ours(loss.name)(**args)


def test_the_calls_the_scenarios_start_from_are_valid():
    """Without the fault each call runs (so the scenarios above fail for their fault alone)."""
    for name, loss in LOSSES.items():
        call = make_call(loss, np.random.default_rng(0), (3, 4))
        out = call.run(ours(name), reduction="mean")
        assert np.isfinite(np.asarray(out)).all(), name


PER_ROW_SPEC = """
from generator.spec import Input, Loss, RowSum

scores = Input("scores")
scale = Input("scale", per_row=True)
spec = Loss("scaled_row_sum", inputs=[scores, scale], axis=-1, reduction="none", row=scale * RowSum(scores))
"""


def test_a_per_row_input_of_the_wrong_shape_is_named(tmp_path):
    """No loss in specs/ has a per-row input yet: this one does."""
    function = build_package(tmp_path, {"scaled_row_sum": PER_ROW_SPEC}).scaled_row_sum
    scores = mx.ones((3, 4))
    np.testing.assert_allclose(np.asarray(function(scores, mx.array([1.0, 2.0, 3.0]))), [4.0, 8.0, 12.0])
    with pytest.raises(ValueError, match=re.escape("Scale shape (4,) does not match the loss shape (3,).")):
        function(scores, mx.ones((4,)))


@pytest.mark.parametrize("name", list(LOSSES))
def test_integer_arrays_are_taken_as_mlx_takes_them(name):
    """Integer (or bool) float inputs are computed in float32, as MLX's own ops do; they are no error."""
    loss = LOSSES[name]
    call = make_call(loss, np.random.default_rng(3))
    arrays = call.mx_arrays()
    whole = {k: mx.round(v) if k in call.differentiable else v for k, v in arrays.items()}
    as_integers = {k: v.astype(mx.int32) if k in call.differentiable else v for k, v in whole.items()}
    got = ours(name)(**as_integers, **call.kwargs(), reduction="none")
    want = ours(name)(**whole, **call.kwargs(), reduction="none")
    assert got.dtype == mx.float32
    np.testing.assert_array_equal(np.array(got), np.array(want))
