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

import mlx.core as mx
import pytest

import generated
from generated import _gpu
from generator import traffic
from generator.load import load_spec, spec_paths
from generator.render import ROOT
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
    ("/2.0f", "/2.0", "double"),  # a double literal: Metal has no double
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


def test_kernel_objects_are_built_once(monkeypatch, emulated):
    built = []
    monkeypatch.setattr(mx.fast, "metal_kernel", lambda **kw: built.append(kw["name"]) or emulated.metal_kernel(**kw))
    _gpu.set_backend("metal")
    for _ in range(3):
        mx.grad(lambda x: _huber_of(x))(mx.random.normal((4, 5)))
    assert len(built) == 2 and len(set(built)) == 2 and len(emulated.launches) == 6


def _huber_of(x):
    return generated.huber_loss(x, mx.ones_like(x), reduction="sum")


def test_kernel_names_carry_a_hash_of_their_source():
    seen = {}
    for path in spec_paths(ROOT / "specs"):
        module = importlib.import_module(f"generated.kernels.{path.stem}")
        for table in (module.FORWARD, module.BACKWARD):
            for kernel in table.values():
                key = (kernel.sources["metal"], kernel.sources["cuda"])
                assert kernel.name not in seen or seen[kernel.name] == key
                seen[kernel.name] = key
    names = {name.rsplit("_", 1)[1] for name in seen}
    assert len(names) == len(seen) and all(len(n) == 12 for n in names)


# ---------------------------------------------------------------- traffic figure

@pytest.mark.parametrize("path", spec_paths(ROOT / "specs"), ids=lambda p: p.stem)
def test_every_loss_moves_the_minimum_bytes(path):
    for figure in traffic.figures(load_spec(path, ROOT)):
        assert figure.forward == pytest.approx(1.0, abs=0.01) and figure.forward_passes == 1
        assert figure.backward == pytest.approx(1.0, abs=0.01) and figure.backward_passes == 1


def test_the_traffic_figure_counts_extra_passes():
    variance = load_spec(checks.VOCABULARY_SPECS / "row_variance.py", ROOT)
    figure, = traffic.figures(variance)
    # mean(x), then mean((x - mean(x))^2): x is read twice; the backward adds one reduction pass
    assert figure.forward_passes == 2 and figure.forward == pytest.approx(2.0, abs=0.01)
    assert figure.backward_passes == 2 and figure.backward == pytest.approx(1.5, abs=0.01)
    assert str(figure).startswith("default: forward 2.00 (2 passes)")
