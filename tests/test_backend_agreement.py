"""Backends agree: the MLX path, the Metal kernels and the CUDA kernels give the same program's answers.

Every variant of every loss is called on one adversarial input matrix through
the MLX path and through the Metal and CUDA kernels (run on the emulator,
tests/metal_shim): rows holding a NaN, +-inf, -inf masked logits, values of
1e30, shared offsets from 1e4 to 1e20, exact 0s and 1s, ignored rows full of
-inf, class indices outside the row, probability targets with a 0 at a -inf
logit. The loss of every element and the gradient of every input (and of the
weights) must have the same NaN and +-inf pattern on every backend, and the
finite values must agree within float32 rounding of the terms they are
computed from: within a few times the float32 MLX path's own distance from
the same program run in float64 (the largest in the row), plus a few ulps.
The numerics (shifted rows, NaN propagation, 0 * inf guards,
masked rows) are passes on the shared program, so a backend that printed its
own would show here.
"""

from __future__ import annotations

import zlib

import mlx.core as mx
import numpy as np
import pytest

from generated import _gpu
from generator.spec import ClassTarget, ClassWeights, Input
from tests.metal_shim import checks, harness

CASES = checks.cases()
BACKENDS = ("mlx", "metal", "cuda")
ROWS, COLUMNS = 10, 5

# One row each: what the loss meets in training and in divergence.
_PATTERN_ROWS = [
    [0.3, -1.2, 0.8, 1.5, -0.4],                      # ordinary values
    [0.5, np.nan, -0.7, 1.1, 0.2],                    # a NaN
    [np.inf, 0.4, -0.9, -np.inf, 1.3],                # both infinities
    [-np.inf, 0.6, -np.inf, -1.4, 0.1],               # masked logits
    [1e30, -1e30, 2e29, -3.0, 1e30],                  # huge values
    [1e4 + 0.3, 1e4 - 1.2, 1e4 + 0.8, 1e4, 1e4 + 1],  # a shared offset of 1e4
    [1e20, 1e20, 1e20, 1e20, 1e20],                   # equal values at 1e20
    [0.0, 1.0, 0.0, 1.0, 0.0],                        # exact 0 and 1
    [-np.inf, -np.inf, -np.inf, -np.inf, -np.inf],    # a row with nothing left (ignored below)
    [1e8 + 2.0, 1e8 - 2.0, 1e8, 1e8 + 1.0, 1e8],      # a shared offset of 1e8
]
PATTERN = np.array(_PATTERN_ROWS, dtype=np.float64)
assert PATTERN.shape == (ROWS, COLUMNS)
# Class indices per row: in range, the ignored index on the row of -inf, outside the row.
_CLASS_INDICES = [2, 0, 1, 1, 3, 4, 0, 2, None, -1]
_OUTSIDE = {4: COLUMNS}  # row 4 takes class COLUMNS (one past the last) when nothing is ignored there


def _probabilities(rng):
    p = rng.uniform(0.1, 1.0, (ROWS, COLUMNS))
    p[3] = [0.0, 0.5, 0.0, 0.25, 0.25]  # zeros at the masked logits
    p[7] = [0.0, 1.0, 0.0, 0.0, 0.0]    # one-hot
    p[8] = [1.0, 0.0, 0.0, 0.0, 0.0]    # one-hot on a row of -inf
    return p / p.sum(axis=1, keepdims=True)


def _arguments(loss, case, rng, params):
    """The adversarial call of ``case``: arrays by name, every float input from PATTERN (columns rolled per input)."""
    arrays = {}
    float_number = 0
    for item in loss.inputs:
        if isinstance(item, ClassTarget) and case.form == "indices":
            indices = []
            for row, index in enumerate(_CLASS_INDICES):
                if index is None:
                    index = params.get(item.ignore_index.name) if item.ignore_index is not None else None
                    index = COLUMNS + 2 if index is None else index
                indices.append(index)
            arrays[item.name] = mx.array(np.array(indices, dtype=np.int32))
        elif isinstance(item, ClassTarget):
            arrays[item.name] = mx.array(_probabilities(rng).astype(np.float32))
        elif isinstance(item, ClassWeights):
            arrays[item.name] = mx.array(rng.uniform(0.5, 1.5, COLUMNS).astype(np.float32))
        elif isinstance(item, Input) and item.per_row:
            column = np.roll(PATTERN, float_number, axis=1)[:, float_number % COLUMNS]
            arrays[item.name] = mx.array(column.astype(np.float32))
            float_number += 1
        else:
            arrays[item.name] = mx.array(np.roll(PATTERN, float_number, axis=1).astype(np.float32))
            float_number += 1
    return arrays


def _params(loss, setting):
    """Defaults, or every float parameter that defaults to 0 set to 0.25 (label smoothing, z-loss, ...)."""
    params = {p.name: checks._ignored(p) if p.optional else p.default for p in loss.numeric_params}
    if setting == "nonzero":
        for p in loss.numeric_params:
            if not p.integer and not p.optional and p.default == 0:
                params[p.name] = 0.25
    return params


def _run(case, backend, arrays, params, dtype=mx.float32):
    """The loss of every element (or row) and the gradient of every float input and of the weights."""
    loss = case.loss()
    arrays = {n: a.astype(dtype) if mx.issubdtype(a.dtype, mx.floating) else a for n, a in arrays.items()}
    function = getattr(case.module(), loss.name)
    names = [i.name for i in loss.inputs if i.differentiable and mx.issubdtype(arrays[i.name].dtype, mx.floating)]
    weights = mx.array(np.linspace(0.5, 1.5, ROWS), dtype=dtype) if loss.weights is not None else None
    if weights is not None and loss.kind == "elementwise":
        weights = mx.broadcast_to(weights[:, None], (ROWS, COLUMNS))

    def call(*primals):
        given = {**arrays, **dict(zip(names, primals))}
        extra = {"axis": -1} if loss.kind == "rowwise" else {}
        if weights is not None:
            extra[loss.weights.name] = primals[-1]
        positional = [given[i.name] for i in loss.inputs if not i.keyword_only]
        keywords = {i.name: given[i.name] for i in loss.inputs if i.keyword_only}
        return function(*positional, **keywords, **extra, **params, **dict(case.flags), reduction="none")

    primals = [arrays[n] for n in names] + ([weights] if weights is not None else [])
    _gpu._built.clear()
    _gpu.set_backend(backend)
    try:
        ones = mx.ones((ROWS,) if loss.kind == "rowwise" else (ROWS, COLUMNS), dtype=dtype)
        (value,), grads = mx.vjp(call, primals, [ones])
        mx.eval(value, grads)
    finally:
        _gpu.set_backend(None)
        _gpu._built.clear()
    results = {"loss": np.array(value.astype(mx.float32), dtype=np.float64)}
    for name, grad in zip(names + (["weights"] if weights is not None else []), grads):
        results[f"d/d{name}"] = np.array(grad.astype(mx.float32), dtype=np.float64)
    return results


def _rounding(float32, float64):
    """Per row, how far the float32 MLX path is from the same program in float64: the rounding of its terms."""
    both = np.isfinite(float32) & np.isfinite(float64)
    error = np.where(both, np.abs(float32 - float64), 0.0)
    return error.reshape(ROWS, -1).max(axis=1).reshape((ROWS,) + (1,) * (float32.ndim - 1))


def _disagreements(name, expected, got, rounding):
    """Where ``got`` differs from ``expected``: another NaN/inf pattern, or finite values beyond rounding."""
    problems = []
    nan_e, nan_g = np.isnan(expected), np.isnan(got)
    if (nan_e != nan_g).any():
        at = np.argwhere(nan_e != nan_g)[:3].tolist()
        problems.append(f"{name}: NaN pattern differs at {at}: {expected[tuple(np.argwhere(nan_e != nan_g)[0])]} "
                        f"vs {got[tuple(np.argwhere(nan_e != nan_g)[0])]}")
    inf_e, inf_g = np.isinf(expected), np.isinf(got)
    same_inf = np.where(inf_e & inf_g, np.sign(expected) == np.sign(got), inf_e == inf_g)
    if not same_inf.all():
        where = tuple(np.argwhere(~same_inf)[0])
        problems.append(f"{name}: inf pattern differs at {where}: {expected[where]} vs {got[where]}")
    finite = np.isfinite(expected) & np.isfinite(got)
    allowed = 16 * np.finfo(np.float32).eps * np.maximum(np.abs(expected), np.abs(got)) + 4 * rounding + 1e-37
    off = finite & (np.abs(expected - got) > allowed)
    if off.any():
        where = tuple(np.argwhere(off)[0])
        problems.append(f"{name}: {expected[where]!r} vs {got[where]!r} at {where}")
    return problems


@pytest.fixture(scope="module")
def emulated():
    kernels = harness.EmulatedKernels()
    patch = pytest.MonkeyPatch()
    patch.setattr(mx.fast, "metal_kernel", kernels.metal_kernel)
    patch.setattr(mx.fast, "cuda_kernel", kernels.cuda_kernel)
    patch.delenv("LOSSCC_BACKEND", raising=False)
    try:
        yield kernels
    finally:
        patch.undo()


@pytest.mark.parametrize("setting", ["defaults", "nonzero"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_backends_agree_on_adversarial_inputs(case, setting, emulated):
    loss = case.loss()
    params = _params(loss, setting)
    if setting == "nonzero" and params == _params(loss, "defaults"):
        pytest.skip("no parameter defaults to 0")
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    arrays = _arguments(loss, case, rng, params)
    launched = len(emulated.launches)
    results = {backend: _run(case, backend, arrays, params) for backend in BACKENDS}
    assert {"metal", "cuda"} <= {backend for backend, *_ in emulated.launches[launched:]}, "the kernels did not run"
    exact = _run(case, "mlx", arrays, params, mx.float64)
    problems = []
    for backend in ("metal", "cuda"):
        for name, expected in results["mlx"].items():
            rounding = _rounding(expected, exact[name])
            problems += [f"{backend} {p}" for p in _disagreements(name, expected, results[backend][name], rounding)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_backends_agree_in_half_precision(case, dtype, emulated):
    """Half-precision inputs (1e30 and 1e20 are inf in float16): the Metal kernels read and write the
    half type and compute in float32, as the MLX path does, so the same pattern and values within the
    rounding of the half result."""
    loss = case.loss()
    params = _params(loss, "defaults")
    rng = np.random.default_rng(zlib.crc32(f"{case.id} {dtype}".encode()))
    arrays = {n: a.astype(dtype) if mx.issubdtype(a.dtype, mx.floating) else a
              for n, a in _arguments(loss, case, rng, params).items()}
    launched = len(emulated.launches)
    expected, got = (_run(case, backend, arrays, params, dtype) for backend in ("mlx", "metal"))
    assert "metal" in {backend for backend, *_ in emulated.launches[launched:]}, "the kernels did not run"
    exact = _run(case, "mlx", arrays, params, mx.float64)  # the same half inputs, computed in float64
    # Both compute in float32, where terms that cancel (tweedie's gradient at mu == y, whose inputs are
    # equal in half) may leave a float32 ulp of the terms on one path and 0 on the other. What a
    # float32 ulp of the inputs moves in the float64 result bounds that too.
    moved = {n: a.astype(mx.float64) * (1 + np.finfo(np.float32).eps * mx.array(rng.choice([-1.0, 1.0], a.shape)))
             if mx.issubdtype(a.dtype, mx.floating) else a for n, a in arrays.items()}
    nearby = _run(case, "mlx", moved, params, mx.float64)
    problems = []
    for name, value in expected.items():
        rounding = np.maximum(_rounding(value, exact[name]), _rounding(nearby[name], exact[name]))
        problems += _disagreements(name, value, got[name], rounding)
    assert not problems, "\n".join(problems)
