"""Metal kernels: the exact source MLX generates, compiled as C++ against tests/metal_shim and run.

For every variant of every spec (and of tests/metal_shim/vocabulary_specs,
which use the parts of the vocabulary the mlx.nn losses leave out), the
generated loss is called with the Metal path forced and ``mx.fast.metal_kernel``
replaced by the emulator: each kernel call gets MLX's own source for it
(``mx.export_function`` with ``verbose=True``), which g++ compiles against the
shim and the emulator executes over every thread of the grid, threadgroups,
simdgroups and barriers included. Losses and gradients must match float64
references on random inputs of odd sizes. Kernels with planted bugs must fail.
"""

import importlib
import math

import mlx.core as mx
import mpmath
import numpy as np
import pytest
import sympy as sp

import generated
from generated import _gpu
from generator.backends.gpu import traffic
from generator.backends.gpu import printer as c_printer
from generator.spec import functions
from generator.spec.load import load_spec
from generator.spec.validate import ALLOWED_FUNCTIONS
from generator.spec.vocabulary import ROW_REDUCTIONS
from tests.metal_shim import checks, harness

CASES = checks.cases()
VOCABULARY = checks.cases(checks.VOCABULARY_SPECS, checks.VOCABULARY_PACKAGE)


@pytest.fixture
def emulated(monkeypatch):
    kernels = harness.EmulatedKernels()
    monkeypatch.setattr(mx.fast, "metal_kernel", kernels.metal_kernel)
    monkeypatch.setattr(mx.fast, "cuda_kernel", kernels.cuda_kernel)
    monkeypatch.delenv("LOSSCC_BACKEND", raising=False)
    _gpu._built.clear()
    yield kernels
    _gpu.set_backend(None)
    _gpu._built.clear()


@pytest.fixture(scope="module")
def vocabulary(tmp_path_factory):
    checks.install_vocabulary(tmp_path_factory.mktemp("vocabulary"))
    checks.prefetch(VOCABULARY, VOCABULARY_DTYPES, "metal")


@pytest.fixture(scope="module")
def prefetched():
    checks.prefetch(CASES, list(checks.DTYPES), "metal")


@pytest.mark.parametrize("dtype", list(checks.DTYPES))
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_metal_kernels_match_float64(case, dtype, emulated, prefetched):
    loss = case.loss()
    for setting in checks.settings(loss.kind, dtype, loss.weights is not None):
        checks.check(case, setting, dtype, "metal", emulated)


VOCABULARY_DTYPES = ["float32", "bfloat16"]


@pytest.mark.parametrize("dtype", VOCABULARY_DTYPES)
@pytest.mark.parametrize("case", VOCABULARY, ids=[c.id for c in VOCABULARY])
def test_metal_kernels_cover_the_vocabulary(case, dtype, emulated, vocabulary):
    loss = case.loss()
    for setting in checks.settings(loss.kind, dtype, loss.weights is not None):
        checks.check(case, setting, dtype, "metal", emulated)


def test_the_emulator_runs_the_exact_source_mlx_generates(emulated):
    _gpu.set_backend("metal")
    generated.cross_entropy(mx.random.normal((2, 40)), mx.array([3, 39]))
    (backend, name, text, grid, group), = emulated.launches
    kernel = importlib.import_module("generated.kernels.cross_entropy").FORWARD["_indices"]
    assert backend == "metal" and name == kernel.name
    assert text.startswith(_gpu.METAL_HEADER) and kernel.sources["metal"] in text
    assert f"[[kernel]] void custom_kernel_{name}_" in text  # MLX writes the signature
    assert "template [[host_name(" in text
    assert grid == (2 * group[0], 1, 1)  # one threadgroup per row


# ---------------------------------------------------------------- planted bugs

def _plant(monkeypatch, module, variant, direction, old, new):
    kernels = getattr(importlib.import_module(f"generated.kernels.{module}"), direction)[variant]
    assert old in kernels.sources["metal"], f"the kernel no longer contains {old!r}"
    monkeypatch.setitem(kernels.sources, "metal", kernels.sources["metal"].replace(old, new, 1))


CE = checks.Case("cross_entropy", (), "indices", targets=True)
HUBER = checks.Case("huber_loss", (), None)


@pytest.mark.parametrize("old, new", [
    ("inputs_in[i]", "inputs_in[i + 1]"),  # reads the neighbour (and past the end)
    ("targets_in[i]", "targets_in[n - 1 - i]"),  # reads the wrong element
])
def test_a_wrong_index_fails(monkeypatch, emulated, old, new):
    _plant(monkeypatch, "huber_loss", "", "FORWARD", old, new)
    with pytest.raises(AssertionError, match="differs from the float64 reference"):
        checks.check(HUBER, checks.Setting((7, 61), "none"), "float32", "metal", emulated)


def test_a_wrong_row_offset_fails(monkeypatch, emulated):
    _plant(monkeypatch, "cross_entropy", "_indices", "BACKWARD", "grad_logits_out[at]", "grad_logits_out[j]")
    with pytest.raises(AssertionError, match="differs from the float64 reference"):
        checks.check(CE, checks.Setting((3, 300), "none", axis=-1), "float32", "metal", emulated)


def test_a_missing_barrier_fails(monkeypatch, emulated):
    barrier = "metal::threadgroup_barrier(metal::mem_flags::mem_threadgroup);\nacc_"
    _plant(monkeypatch, "cross_entropy", "_indices", "FORWARD", barrier, "acc_")
    with pytest.raises(harness.KernelError, match="data race"):
        checks.check(CE, checks.Setting((3, 300), "none", axis=-1), "float32", "metal", emulated)


def test_a_barrier_not_every_thread_reaches_fails(monkeypatch, emulated):
    barrier = "metal::threadgroup_barrier(metal::mem_flags::mem_threadgroup);\nacc_"
    _plant(monkeypatch, "cross_entropy", "_indices", "FORWARD", barrier, "if (tid > 0) " + barrier)
    with pytest.raises(harness.KernelError, match="barrier|deadlock"):
        checks.check(CE, checks.Setting((3, 300), "none", axis=-1), "float32", "metal", emulated)


@pytest.mark.parametrize("old, new, error", [
    ("const float delta = params[0];", "const float delta = params[0]", "expected"),  # syntax
    ("static_cast<float>(inputs_in[i])", "inputs_in[i]", "conversion"),  # half read without a cast
    ("0.5f*", "0.5*", "double"),  # a double literal: Metal has no double
])
def test_source_that_would_not_compile_fails(monkeypatch, emulated, old, new, error):
    _plant(monkeypatch, "huber_loss", "", "FORWARD", old, new)
    with pytest.raises(harness.KernelError, match=error):
        checks.check(HUBER, checks.Setting((7, 61), "none"), "float16", "metal", emulated)


def test_writing_past_an_output_fails(monkeypatch, emulated):
    _plant(monkeypatch, "huber_loss", "", "FORWARD", "if (i < n) {", "if (i <= n) {")
    with pytest.raises(harness.KernelError, match="out of bounds"):
        checks.check(HUBER, checks.Setting((7, 61), "none"), "float32", "metal", emulated)


# ---------------------------------------------------------------- dispatch

def _huber(*shapes, dtype=mx.float32):
    x, y = (mx.random.normal(s).astype(dtype) for s in shapes or [(5, 9), (5, 9)])
    return generated.huber_loss(x, y, reduction="mean")


def test_the_cpu_runs_mlx_ops(emulated):
    assert mx.default_device().type == mx.DeviceType.cpu
    assert _gpu.backend() == "mlx"
    _huber()
    assert emulated.launches == []


@pytest.mark.parametrize("available, expected", [("metal", "metal"), ("cuda", "cuda"), (None, "mlx")])
def test_a_gpu_device_runs_its_kernels(monkeypatch, emulated, available, expected):
    monkeypatch.setattr(mx, "default_device", lambda: mx.Device(mx.gpu))
    monkeypatch.setattr(mx.metal, "is_available", lambda: available == "metal")
    monkeypatch.setattr(mx.cuda, "is_available", lambda: available == "cuda")
    assert _gpu.backend() == expected
    _huber()
    assert {b for b, *_ in emulated.launches} == ({expected} if expected != "mlx" else set())


def test_the_environment_variable_and_set_backend_force_a_path(monkeypatch, emulated):
    monkeypatch.setenv("LOSSCC_BACKEND", "cuda")
    _huber()
    assert [b for b, *_ in emulated.launches] == ["cuda"]
    generated.set_backend("mlx")  # the function wins over the variable
    _huber()
    assert len(emulated.launches) == 1
    generated.set_backend("auto")
    monkeypatch.setenv("LOSSCC_BACKEND", "mps")
    with pytest.raises(ValueError, match="LOSSCC_BACKEND must be one of"):
        _huber()
    with pytest.raises(ValueError, match="backend must be one of"):
        generated.set_backend("gpu")


@pytest.mark.parametrize("dtypes", [(mx.float64, mx.float64), (mx.float32, mx.float16)])
def test_calls_the_kernels_are_not_built_for_run_mlx_ops(emulated, dtypes):
    _gpu.set_backend("metal")
    x, y = (mx.random.normal((4, 3)).astype(d) for d in dtypes)
    with mx.stream(mx.cpu):
        generated.huber_loss(x, y)
    generated.huber_loss(mx.zeros((0, 3)), mx.zeros((0, 3)))
    assert emulated.launches == []
    many_rows = mx.zeros((2**24, 2))  # 2**24 rows of 256 threads: past 32-bit thread indices
    assert _gpu.backend_for([many_rows], axis=1) == "mlx" and _gpu.backend_for([many_rows]) == "metal"
    # (lazy zeros: never allocated) whole threadgroups of 256 threads: 2**31 - 255 elements need 2**31 threads
    assert _gpu.ELEMENT_THREADS == 256
    assert _gpu.backend_for([mx.zeros((2**31 - 256,))]) == "metal"
    assert {_gpu.backend_for([mx.zeros((size,))]) for size in (2**31 - 255, 2**31 - 1)} == {"mlx"}


def test_integer_inputs_are_read_as_floats(emulated):
    _gpu.set_backend("metal")
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(9, 13)).astype(np.float32), rng.integers(-3, 4, size=(9, 13)).astype(np.int32)
    loss, (grad_x, grad_y) = mx.value_and_grad(
        lambda a, b: generated.mse_loss(a, b, reduction="mean"), argnums=(0, 1))(mx.array(x), mx.array(y))
    assert len(emulated.launches) == 2
    np.testing.assert_allclose(float(loss), np.mean((x.astype(np.float64) - y) ** 2), rtol=1e-6)
    np.testing.assert_allclose(np.array(grad_x), 2 * (x.astype(np.float64) - y) / x.size, rtol=1e-5)
    assert grad_y.dtype == mx.int32 and not np.array(grad_y).any()


def test_kernel_objects_are_built_once(monkeypatch, emulated):
    built = []
    monkeypatch.setattr(mx.fast, "metal_kernel", lambda **kw: built.append(kw["name"]) or emulated.metal_kernel(**kw))
    _gpu.set_backend("metal")
    for _ in range(3):
        mx.grad(lambda x: _huber_of(x))(mx.random.normal((4, 5)))
    assert len(built) == 2 and len(set(built)) == 2 and len(emulated.launches) == 6


def _huber_of(x):
    return generated.huber_loss(x, mx.ones_like(x), reduction="sum")


@pytest.mark.parametrize("dialect", [c_printer.METAL, c_printer.CUDA], ids=["metal", "cuda"])
def test_the_printers_know_every_function_a_spec_may_use(dialect):
    structural = (sp.Piecewise, functions.Select, *ROW_REDUCTIONS)  # printed as ?:, resolved, or reduced
    for function in ALLOWED_FUNCTIONS:
        if not issubclass(function, structural):
            assert function.__name__ in dialect.functions, f"{dialect.name} cannot print {function.__name__}"


def test_kernel_names_carry_a_hash_of_their_source():
    seen = {}
    for path in checks.kernel_spec_paths():
        module = importlib.import_module(f"generated.kernels.{path.stem}")
        for table in (module.FORWARD, module.BACKWARD):
            for kernel in table.values():
                key = (kernel.sources["metal"], kernel.sources["cuda"])
                assert kernel.name not in seen or seen[kernel.name] == key
                seen[kernel.name] = key
    names = {name.rsplit("_", 1)[1] for name in seen}
    assert len(names) == len(seen) and all(len(n) == 12 for n in names)


# ---------------------------------------------------------------- traffic figure

# Losses whose formula nests a reduction in another take a second pass over the row, and those computed
# relative to the row's shift (generator/shift.py) one more, for the shift (the row's maximum) itself:
# (variant, forward bytes, forward passes, backward bytes, backward passes).
EXTRA_PASSES = {
    # the shift, then logsumexp, the mean (label smoothing) and the target's score relative to it
    "cross_entropy": [("_indices", 2.0, 2, 1.0, 1), ("_probabilities", 1.5, 2, 1.0, 1)],
    "softmax_focal_loss": [("_indices", 2.0, 2, 1.0, 1)],
    # the shift; each hinge needs the target's score first; the gradient of the target's score sums every hinge
    "multi_margin_loss": [("_indices", 2.0, 3, 1.5, 2)],
    # the shift; 1 - p_t needs logsumexp first: a gather at the index for class indices, a second read of the
    # row (logits and targets) for probabilities, whose gradient is written too
    "poly1_cross_entropy": [("_indices", 2.0, 3, 1.0, 2), ("_probabilities", 2.5, 3, 1.5, 2)],
    # the shift, then the maximum (the perceptron's is the shift's, found again); the gradient counts the ties
    "multiclass_hinge_loss": [("_indices", 2.0, 2, 1.5, 2)],
    "multiclass_perceptron_loss": [("_indices", 2.0, 2, 1.5, 2)],
    # the shift, then logsumexp, then the labels' sum relative to it (logits and labels read again); the
    # gradient sums the labels first
    "ranking_softmax_loss": [("", 2.0, 3, 1.33, 2)],
}


@pytest.mark.parametrize("path", checks.kernel_spec_paths(), ids=lambda p: p.stem)
def test_every_loss_moves_the_minimum_bytes(path):
    figures = traffic.figures(load_spec(path))
    if path.stem in EXTRA_PASSES:
        found = [(f.variant, f.forward, f.forward_passes, f.backward, f.backward_passes) for f in figures]
        assert found == [(v, pytest.approx(fw, abs=0.01), fp, pytest.approx(bw, abs=0.01), bp)
                         for v, fw, fp, bw, bp in EXTRA_PASSES[path.stem]]
        return
    for figure in figures:
        assert figure.forward == pytest.approx(1.0, abs=0.01) and figure.forward_passes == 1
        assert figure.backward == pytest.approx(1.0, abs=0.01) and figure.backward_passes == 1


def test_the_traffic_figure_counts_extra_passes():
    variance = load_spec(checks.VOCABULARY_SPECS / "row_variance.py")
    figure, = traffic.figures(variance)
    # the shift, mean(x), then mean((x - mean(x))^2): x is read three times; the backward adds one reduction pass
    assert figure.forward_passes == 3 and figure.forward == pytest.approx(3.0, abs=0.01)
    assert figure.backward_passes == 2 and figure.backward == pytest.approx(1.5, abs=0.01)
    assert str(figure).startswith("default: forward 3.00 (3 passes)")


# ---------------------------------------------------------------- helpers and special values

SPECIAL = [-math.inf, -100.0, -20.0, -8.5, -1.0, -0.3, -1e-3, -1e-8, -0.0, 0.0, 1e-8, 1e-3, 0.3, 1.0, 1.999,
           2.0, 3.7, 7.9, 8.1, 20.0, 88.0, 100.0, math.inf, math.nan]
HELPERS = {  # helper -> its float64 (mpmath) value, None where it is undefined
    "losscc_erf": mpmath.erf,
    "losscc_log1p": lambda x: mpmath.log1p(x) if x > -1 else (-mpmath.inf if x == -1 else None),
    "losscc_expm1": mpmath.expm1,
    "losscc_sigmoid": lambda x: 1 / (1 + mpmath.exp(-x)),
    "losscc_softplus": lambda x: mpmath.log1p(mpmath.exp(x)) if x < 1e4 else x,
    "losscc_logcosh": lambda x: mpmath.log(mpmath.cosh(x)) if abs(x) < 1e4 else abs(x) - mpmath.log(2),
    "losscc_sign": lambda x: mpmath.sign(x),
}


def _expected(function, x):
    if math.isnan(x):
        return 0.0 if function == "losscc_sign" else math.nan  # mx.sign(NaN) is 0, and so MLX's autodiff of |x|
    if math.isinf(x) and function in ("losscc_erf", "losscc_sigmoid", "losscc_sign"):
        return math.copysign(1.0, x) if function != "losscc_sigmoid" else float(x > 0)
    if math.isinf(x):
        limits = {"losscc_log1p": x, "losscc_expm1": -1.0 if x < 0 else x, "losscc_softplus": max(x, 0.0),
                  "losscc_logcosh": math.inf}
        return limits[function]
    with mpmath.workdps(40):
        value = HELPERS[function](mpmath.mpf(x))
    return math.nan if value is None else float(value)


@pytest.mark.parametrize("backend", ["metal", "cuda"])
def test_header_functions_at_special_values(backend, emulated):
    functions = list(HELPERS) if backend == "metal" else ["losscc_sigmoid", "losscc_softplus", "losscc_logcosh", "losscc_sign"]
    size = 64  # whole simdgroups, so the CUDA grid needs no bounds check
    x = mx.array(np.resize(np.array(SPECIAL, dtype=np.float32), size))
    index = "thread_position_in_grid.x" if backend == "metal" else "blockIdx.x * blockDim.x + threadIdx.x"
    body = f"const uint i = {index};\n" + "".join(f"{f}_out[i] = {f}(x[i]);\n" for f in functions)
    make = getattr(emulated, f"{backend}_kernel")
    kernel = make(name="helpers", input_names=["x"], output_names=[f"{f}_out" for f in functions], source=body,
                  header=getattr(_gpu, f"{backend.upper()}_HEADER"))
    results = kernel(inputs=[x], grid=(size, 1, 1), threadgroup=(32, 1, 1), output_shapes=[(size,)] * len(functions),
                     output_dtypes=[mx.float32] * len(functions))
    for function, result in zip(functions, results):
        got = np.array(result)[: len(SPECIAL)].astype(np.float64)
        with np.errstate(over="ignore"):  # what overflows float32 is expected as inf
            expected = np.array([_expected(function, v) for v in SPECIAL]).astype(np.float32).astype(np.float64)
        np.testing.assert_allclose(got, expected, rtol=3e-6, atol=1e-38, equal_nan=True, err_msg=function)


@pytest.mark.parametrize("backend", ["metal", "cuda"])
def test_c_pow_semantics(backend, emulated):
    pairs = [(-2.0, 3.0), (-2.0, 2.0), (-2.0, 0.5), (0.0, 2.0), (2.0, -1.0), (-0.5, -3.0), (3.0, 0.0), (0.0, -1.0)]
    x, y = (mx.array(np.resize(np.array(v, dtype=np.float32), 32)) for v in zip(*pairs))
    function = "losscc_pow" if backend == "metal" else "powf"
    index = "thread_position_in_grid.x" if backend == "metal" else "threadIdx.x"
    kernel = getattr(emulated, f"{backend}_kernel")(
        name="power", input_names=["x", "y"], output_names=["out"],
        source=f"const uint i = {index};\nout[i] = {function}(x[i], y[i]);\n",
        header=getattr(_gpu, f"{backend.upper()}_HEADER"))
    got, = kernel(inputs=[x, y], grid=(32, 1, 1), threadgroup=(32, 1, 1), output_shapes=[(32,)],
                  output_dtypes=[mx.float32])
    expected = [math.pow(a, b) if not (a < 0 and b != int(b)) and not (a == 0 and b < 0) else
                (math.inf if a == 0 else math.nan) for a, b in pairs]
    np.testing.assert_allclose(np.array(got)[: len(pairs)], expected, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("backend", ["metal", "cuda"])
def test_masked_logits(backend, emulated, vocabulary):
    """-inf logits (masked classes) get probability 0 and no NaN in the loss or the gradient.

    (generated.cross_entropy gives NaN there on every path: its label-smoothing term is 0 * mean(-inf).)
    """
    package = importlib.import_module(checks.VOCABULARY_PACKAGE)
    importlib.import_module(f"{checks.VOCABULARY_PACKAGE}._gpu")._built.clear()
    package.set_backend(backend)
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(4, 70)).astype(np.float32)
    logits[:, ::3] = -np.inf
    targets = np.array([1, 2, 4, 68])
    try:
        loss, grad = mx.value_and_grad(lambda z: package.softmax_nll(z, mx.array(targets), reduction="sum"))(
            mx.array(logits))
    finally:
        package.set_backend(None)
    finite = np.where(np.isinf(logits), -np.inf, logits.astype(np.float64))
    top = finite.max(axis=1, keepdims=True)
    lse = top + np.log(np.exp(finite - top).sum(axis=1, keepdims=True))
    expected_loss = (lse[:, 0] - finite[np.arange(4), targets]).sum()
    expected_grad = np.exp(finite - lse)
    expected_grad[np.arange(4), targets] -= 1
    assert len(emulated.launches) == 2
    np.testing.assert_allclose(float(loss), expected_loss, rtol=1e-5)
    np.testing.assert_allclose(np.array(grad), expected_grad, rtol=1e-5, atol=1e-7)


def test_the_command_line_lists_the_traffic_figure():
    from click.testing import CliRunner

    from generator.tools.cli import main

    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0
    names = [path.stem for path in checks.kernel_spec_paths()]
    rows = {name: line for line in result.output.splitlines() for name in names if f" {name} " in line}
    assert sorted(rows) == sorted(names)
    assert all("traffic fwd 1.00 bwd 1.00" in line for name, line in rows.items() if name not in EXTRA_PASSES)
    assert "traffic fwd 2.50 bwd 1.50" in rows["poly1_cross_entropy"]  # the worst variant's figures
