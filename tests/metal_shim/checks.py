"""One kernel check: call a generated loss on a GPU path (kernels emulated) and compare with float64.

Random inputs are drawn for every argument the spec declares (class indices,
probability rows, per-row inputs, weights, ignored rows), rounded to the
kernel dtype, and the generated public function is differentiated with
``mx.vjp`` while ``generated.set_backend`` forces the Metal or CUDA path. The
loss and every gradient are compared with :mod:`reference` evaluated on the
same (rounded) values in float64.
"""

from __future__ import annotations

import importlib
import itertools
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from generator.render import render_package, write_package
from generator.spec import ClassTarget, ClassWeights, Input
from generator.spec.load import load_spec, spec_paths
from tests.helpers import ROOT

from . import harness
from . import reference as ref

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
# Specs using what the mlx.nn losses do not (nested reductions, RowMax, ignore_index, per-row
# inputs, erf/log1p/expm1/...), generated into a package of this name by install_vocabulary().
VOCABULARY_SPECS = Path(__file__).resolve().parent / "vocabulary_specs"
VOCABULARY_PACKAGE = "losscc_vocabulary"
# Relative tolerance per kernel dtype: float32 compute plus rounding the result to the dtype.
TOLERANCE = {"float32": 3e-5, "float16": 2e-3, "bfloat16": 1.2e-2}
# Inputs whose losses come near the dtype's largest value (float16: 65504) are redrawn.
LARGEST = {"float32": 1e30, "float16": 1e3, "bfloat16": 1e30}


@dataclass(frozen=True)
class Case:
    """One kernel variant of one loss: a value for each flag and a target form.

    The loss is ``<package>.<spec>``, generated from ``<spec_dir>/<spec>.py``.
    """

    spec: str
    flags: tuple  # ((name, value), ...)
    form: str | None  # "indices" | "probabilities" for row-wise losses
    spec_dir: str = str(ROOT / "specs")
    package: str = "generated"
    targets: bool = False  # whether the loss takes class targets

    @property
    def id(self):
        parts = [self.spec] + [f"{n}" if v else f"no_{n}" for n, v in self.flags]
        return "-".join(parts + ([self.form] if self.targets else []))

    def loss(self):
        return load_spec(Path(self.spec_dir) / f"{self.spec}.py")

    def module(self):
        return importlib.import_module(f"{self.package}.{self.spec}")


def kernel_spec_paths(spec_dir=ROOT / "specs"):
    """The specs in ``spec_dir`` whose losses have element or row kernels (a recurrence loss's, ctc_loss's, run
    its frames: tests/test_ctc_loss.py checks them)."""
    return [path for path in spec_paths(spec_dir) if load_spec(path).kind != "recurrence"]


def cases(spec_dir=ROOT / "specs", package="generated"):
    """Every variant of every spec in ``spec_dir`` with kernels (generated into ``package``)."""
    found = []
    for path in kernel_spec_paths(spec_dir):
        loss = load_spec(path)
        forms = [None] if loss.kind == "elementwise" else ["indices"] + (
            ["probabilities"] if any(t.probabilities for t in loss.class_targets) else []
        )
        for values in itertools.product((True, False), repeat=len(loss.flags)):
            for form in forms:
                flags = tuple((f.name, v) for f, v in zip(loss.flags, values))
                found.append(Case(loss.name, flags, form, str(spec_dir), package, bool(loss.class_targets)))
    return found


@dataclass(frozen=True)
class Setting:
    """The shape of a call: array shape, axis (row-wise), reduction, whether weights are given."""

    shape: tuple
    reduction: str
    axis: int | None = None
    weighted: bool = False


def _ignored(param):
    """The class index a check ignores: the ignore_index's default, or torch's -100 where it is off by default."""
    return -100 if param.default is None else param.default


def _rounded(values, dtype):
    """``values`` rounded to ``dtype``: the MLX array and its exact float64 values."""
    array = mx.array(values.astype(np.float32)).astype(dtype)
    return array, np.array(array.astype(mx.float32)).astype(np.float64)


class _Call:
    """The arguments of one call, as MLX arrays and as float64 values in the reference's layout."""

    def __init__(self, loss, case, setting, dtype, rng, positive):
        self.loss, self.case, self.setting = loss, case, setting
        rowwise = loss.kind == "rowwise"
        shape = setting.shape
        axis = setting.axis % len(shape) if rowwise else None
        self.axis = axis
        self.loss_shape = tuple(s for i, s in enumerate(shape) if i != axis) if rowwise else shape
        self.row_length = shape[axis] if rowwise else 1
        self.rows = int(np.prod(self.loss_shape))
        draw = (lambda size: rng.uniform(0.05, 0.95, size)) if positive else (lambda size: rng.normal(0.0, 1.0, size))
        self.arrays, self.values = {}, {}
        for item in loss.inputs:
            if isinstance(item, ClassTarget) and case.form == "indices":
                indices = rng.integers(0, self.row_length, self.loss_shape)
                if item.ignore_index is not None:
                    indices.reshape(-1)[::3] = _ignored(item.ignore_index)
                self.arrays[item.name] = mx.array(indices.astype(np.int32))
                self.values[item.name] = indices.reshape(-1)
            elif isinstance(item, ClassWeights):
                # one weight per class, along the axis (the last axis of an elementwise loss); values broadcast
                class_axis = axis if rowwise else len(shape) - 1
                if class_axis < 0:  # a 0-d elementwise call has no class axis: the weights stay off
                    self.arrays[item.name], self.values[item.name] = None, np.ones(shape)
                    continue
                along = [1] * len(shape)
                along[class_axis] = shape[class_axis]
                self.arrays[item.name], rounded = _rounded(rng.uniform(0.5, 1.5, shape[class_axis]), dtype)
                self.values[item.name] = np.broadcast_to(rounded.reshape(along), shape)
            elif isinstance(item, ClassTarget):
                weights = rng.uniform(0.1, 1.0, shape)
                probabilities = weights / weights.sum(axis=axis, keepdims=True)
                self.arrays[item.name], self.values[item.name] = _rounded(probabilities, dtype)
            else:
                item_shape = self.loss_shape if item.per_row else shape
                draw_item = draw
                if positive and not rowwise and item.domain == "log_probabilities":
                    draw_item = lambda size: np.log(draw(size))  # one log-probability each (a sequence's)
                values = draw_item(item_shape)
                # No two inputs equal after rounding: derived gradients such as |u|^p sign(u) / |u|
                # (triplet_loss) are 0/0 at u = 0, in the MLX path as in the kernels.
                for _ in range(20):
                    rounded = _rounded(values, dtype)[1]
                    ties = np.zeros(item_shape, dtype=bool)
                    for other in self.values.values():
                        if np.shape(other) == item_shape and np.issubdtype(np.asarray(other).dtype, np.floating):
                            ties |= rounded == other
                    if not ties.any():
                        break
                    values = np.where(ties, draw_item(item_shape), values)
                self.arrays[item.name], self.values[item.name] = _rounded(values, dtype)
        self.weights = None
        if setting.weighted:
            self.weights, self.weight_values = _rounded(rng.uniform(0.5, 1.5, self.loss_shape), dtype)
        self.params = {p.name: _ignored(p) if p.optional else p.default for p in loss.numeric_params}

    def layout(self, name, value):
        """float64 values in the reference's layout (rows x row_length for row-wise)."""
        if self.loss.kind == "elementwise":
            return value
        item = next(i for i in self.loss.inputs if i.name == name)
        if isinstance(item, ClassTarget) and self.case.form == "indices":
            return value.reshape(-1)
        if isinstance(item, Input) and item.per_row:
            return value.reshape(-1, 1)
        return np.moveaxis(value, self.axis, -1).reshape(self.rows, self.row_length)

    def unlayout(self, name, value):
        """Back from the reference's layout to the argument's shape."""
        if self.loss.kind == "elementwise":
            return value
        item = next(i for i in self.loss.inputs if i.name == name)
        if isinstance(item, Input) and item.per_row:
            return value.reshape(self.loss_shape)
        moved = list(self.setting.shape)
        moved.append(moved.pop(self.axis))
        return np.moveaxis(value.reshape(moved), -1, self.axis)

    def reference_arrays(self):
        arrays = {name: self.layout(name, value) for name, value in self.values.items()}
        for item in self.loss.class_targets:
            if item.ignore_index is not None and self.case.form == "indices":
                # an ignored row is evaluated at any class (here 0): the caller drops it
                arrays[item.name] = np.where(arrays[item.name] == _ignored(item.ignore_index), 0, arrays[item.name])
        return arrays


def _differentiable(loss, call):
    return [i.name for i in loss.inputs if i.differentiable and mx.issubdtype(call.arrays[i.name].dtype, mx.floating)]


def _close(name, got, expected, tolerance, what, skip=None):
    """``got`` within ``tolerance`` of ``expected`` relative to |expected| + mean |expected|.

    ``skip`` marks kinks, where the reference (a central difference) is not the
    kernel's subgradient; they must be rare.
    """
    got = np.array(got.astype(mx.float32)).astype(np.float64)
    expected = np.broadcast_to(expected, got.shape).copy()
    assert np.all(np.isfinite(expected)), f"{what}: the float64 reference of {name} is not finite"
    if skip is not None:
        # one in a tiny array: where the derivative crosses 0 the one-sided differences disagree too
        assert skip.sum() <= max(1, 0.05 * skip.size), f"{what}: {skip.sum()} inputs of {name} sit on kinks"
        got = np.where(skip, expected, got)
    scale = np.abs(expected) + np.mean(np.abs(expected)) + 1e-30
    error = np.abs(got - expected) / scale
    worst = np.unravel_index(np.argmax(np.where(np.isnan(error), np.inf, error)), error.shape) if error.size else ()
    assert error.size == 0 or np.nanmax(error) <= tolerance and not np.isnan(error).any(), (
        f"{what}: {name} differs from the float64 reference by {np.nanmax(error):.3g} (relative; tolerance "
        f"{tolerance:.3g}) at {worst}: got {got[worst] if error.size else got}, expected "
        f"{expected[worst] if error.size else expected}"
    )


def check(case, setting, dtype_name, backend, emulated, dry=False):
    """Run ``case`` on ``backend`` through the emulated kernels and compare with float64 references.

    ``dry``: only make the calls (the kernels record their source; see EmulatedKernels(execute=False)).
    """
    gpu = importlib.import_module(f"{case.package}._gpu")
    gpu._built.clear()  # kernel objects of earlier tests belong to other emulators
    gpu.set_backend(backend)
    try:
        _check(case, setting, dtype_name, backend, emulated, dry)
    finally:
        gpu.set_backend(None)
        gpu._built.clear()


def _check(case, setting, dtype_name, backend, emulated, dry):
    loss = case.loss()
    flags = dict(case.flags)
    dtype = DTYPES[dtype_name]
    tolerance = TOLERANCE[dtype_name]
    what = f"{case.id} {dtype_name} {setting} on {backend}"
    function = getattr(case.module(), loss.name)
    reference = ref.Reference(loss, flags, case.form)
    seed = zlib.crc32(f"{case.id} {dtype_name} {setting}".encode())

    for positive in (False, True):  # standard normal inputs, or (0, 1) where the loss needs them
        call = _Call(loss, case, setting, dtype, np.random.default_rng(seed), positive)
        try:
            with np.errstate(invalid="raise", divide="raise"):  # log(-1) hidden by a clip counts too
                per_item = reference(call.reference_arrays(), call.params)
        except FloatingPointError:
            continue
        if np.all(np.isfinite(per_item)) and np.max(np.abs(per_item), initial=0.0) < LARGEST[dtype_name]:
            break
    else:
        raise AssertionError(f"{what}: no finite float64 reference on normal or (0, 1) inputs")

    rng = np.random.default_rng(seed + 1)
    if setting.reduction == "none":
        cotangent, cotangent_values = _rounded(rng.normal(0.0, 1.0, call.loss_shape), dtype)
    else:
        cotangent, cotangent_values = _rounded(np.array(0.75), dtype)

    names = _differentiable(loss, call) + (["weights"] if call.weights is not None else [])
    arguments = {**call.arrays}

    def run(*primals):
        given = {**arguments, **dict(zip(names, primals))}
        extra = {loss.weights.name: given.pop("weights")} if call.weights is not None else {}
        if loss.kind == "rowwise":
            extra["axis"] = setting.axis
        extra.update({i.name: given[i.name] for i in loss.inputs if i.keyword_only})
        return function(*[given[i.name] for i in loss.inputs if not i.keyword_only], **extra, **call.params, **flags,
                        reduction=setting.reduction)

    launched = len(emulated.launches)
    primals = [call.arrays[n] for n in names if n != "weights"] + ([call.weights] if call.weights is not None else [])
    (output,), gradients = mx.vjp(run, primals, [cotangent])
    mx.eval(output, gradients)
    kernels = [name for _, name, *_ in emulated.launches[launched:]]
    assert any(f"_{loss.name}" in k and "_forward_" in k for k in kernels), f"{what}: no forward kernel ran"
    assert any(f"_{loss.name}" in k and "_backward_" in k for k in kernels), f"{what}: no backward kernel ran"
    assert all(backend == b for b, *_ in emulated.launches[launched:]), f"{what}: a kernel of another backend ran"
    if dry:
        return

    # float64 reference: the loss per element (or row), masked, weighted, reduced
    kept = np.ones(call.rows if loss.kind == "rowwise" else call.loss_shape)
    target = next(iter(loss.class_targets), None)
    if target is not None and target.ignore_index is not None and case.form == "indices":
        kept = (call.values[target.name] != _ignored(target.ignore_index)).astype(np.float64)
    weights = call.weight_values.reshape(kept.shape) if call.weights is not None else np.ones_like(kept)
    loss_values = per_item.reshape(kept.shape) * kept * weights
    count = kept.sum()
    if setting.reduction == "none":
        expected = loss_values.reshape(call.loss_shape)
        spread = cotangent_values.reshape(kept.shape)
    elif setting.reduction == "mean":
        expected = loss_values.sum() / count
        spread = np.full(kept.shape, float(cotangent_values) / count)
    else:
        expected = loss_values.sum()
        spread = np.full(kept.shape, float(cotangent_values))
    _close("the loss", output, expected, tolerance, what)

    arrays = call.reference_arrays()
    for name, gradient in zip(names, gradients):
        kinks = None
        if name == "weights":
            expected = (spread * kept * per_item.reshape(kept.shape)).reshape(call.loss_shape)
        else:
            derivative, kinks = ref.finite_difference(reference, arrays, call.params, name, spread * kept * weights)
            expected, kinks = call.unlayout(name, derivative), call.unlayout(name, kinks)
        _close(f"the gradient of {name}", gradient, expected, tolerance, what, kinks)


def sources(cases, dtypes, backend):
    """The source of every kernel call the checks of ``cases`` make (found by calls that run nothing)."""
    recorder = harness.EmulatedKernels(execute=False)
    patch = pytest.MonkeyPatch()
    try:
        patch.setattr(mx.fast, f"{backend}_kernel", getattr(recorder, f"{backend}_kernel"))
        for case in cases:
            loss = case.loss()
            for dtype in dtypes:
                for setting in settings(loss.kind, dtype, loss.weights is not None):
                    check(case, setting, dtype, backend, recorder, dry=True)
    finally:
        patch.undo()
    return sorted({text for _, _, text, *_ in recorder.launches})


def prefetch(cases, dtypes, backend):
    """Compile, a few at a time and in parallel, the kernels the checks of ``cases`` will run."""
    harness.prefetch(backend, sources(cases, dtypes, backend))


def install_vocabulary(folder):
    """Generate the vocabulary specs into ``folder/losscc_vocabulary`` and make it importable."""
    write_package(render_package(VOCABULARY_SPECS), Path(folder) / VOCABULARY_PACKAGE)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    importlib.invalidate_caches()


def settings(kind, dtype_name, has_weights):
    """The calls each variant is checked with: odd sizes, partial threadgroups, rows shorter and longer
    than a threadgroup, a strided (inner) axis, every reduction, with and without weights."""
    if kind == "elementwise":
        found = [Setting((7, 61), "none"), Setting((7, 61), "mean", weighted=has_weights)]
        if dtype_name == "float32":
            found += [Setting((5,), "sum"), Setting((3, 5), "sum", weighted=has_weights), Setting((), "none")]
        return found
    found = [Setting((3, 300), "none", axis=-1), Setting((3, 300), "mean", axis=-1, weighted=has_weights)]
    if dtype_name == "float32":
        found += [Setting((4, 37, 3), "sum", axis=1, weighted=has_weights), Setting((6, 5), "none", axis=-1),
                  Setting((50,), "none", axis=0), Setting((2, 1100), "sum", axis=-1)]
    return found


__all__ = ["Case", "Setting", "cases", "check", "settings", "sources", "prefetch", "install_vocabulary"]
