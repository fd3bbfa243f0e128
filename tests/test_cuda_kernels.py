"""CUDA kernels: compiled with nvcc inside the signature MLX writes, and run on the CPU emulator.

MLX's CPU build cannot build a CUDA kernel, so the source is laid out as MLX
0.32's ``mlx/backend/cuda/custom_kernel.cpp`` does (tests/metal_shim/harness.py,
``cuda_source``). Every kernel of every variant and dtype is compiled with
``nvcc`` for sm_90 (warnings are errors), with a small stand-in for MLX's device
header (tests/metal_shim/nvcc). The same source also runs on the emulator
(tests/metal_shim/cuda_emulation.h), so CUDA losses and gradients are checked
against float64 references like the Metal ones. No NVIDIA GPU is needed;
bench/gpu_bandwidth.py runs the kernels on one.
"""

import importlib

import mlx.core as mx
import pytest

from generated import _gpu
from tests.metal_shim import checks, harness

CASES = checks.cases()
needs_nvcc = pytest.mark.skipif(harness.NVCC is None, reason="nvcc (the CUDA toolkit) is not installed; CI installs it")


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


@needs_nvcc
@pytest.mark.parametrize("dtype", list(checks.DTYPES))
def test_nvcc_compiles_every_kernel(dtype):
    sources = checks.sources(CASES, [dtype], "cuda")
    kernels = {name for case in CASES for name in _kernel_names(case)}
    assert all(any(f"custom_kernel_{name}_" in text for text in sources) for name in kernels)
    harness.nvcc_compile(sources)


def _kernel_names(case):
    module = importlib.import_module(f"generated.kernels.{case.spec}")
    variant = "".join(f"_{n}" if v else f"_no_{n}" for n, v in case.flags) + (f"_{case.form}" if case.form else "")
    return [module.FORWARD[variant].name, module.BACKWARD[variant].name]


@needs_nvcc
def test_nvcc_rejects_a_broken_kernel():
    text = checks.sources([checks.Case("huber_loss", (), None)], ["float16"], "cuda")[0]
    broken = text.replace("static_cast<float>(inputs_in[i])", "static_cast<float>(inputs_in[i]", 1)
    assert broken != text
    with pytest.raises(harness.KernelError, match="error"):
        harness.nvcc_compile([broken])


# The emulated CUDA runs cover float32 and bfloat16 (float16 differs from bfloat16 only in the
# conversions, which nvcc checks above and the Metal tests run).
EMULATED_DTYPES = ["float32", "bfloat16"]


@pytest.fixture(scope="module")
def prefetched():
    checks.prefetch(CASES, EMULATED_DTYPES, "cuda")


@pytest.mark.parametrize("dtype", EMULATED_DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cuda_kernels_match_float64(case, dtype, emulated, prefetched):
    loss = case.loss()
    for setting in checks.settings(loss.kind, dtype, loss.weights is not None):
        checks.check(case, setting, dtype, "cuda", emulated)


def _plant(monkeypatch, module, variant, direction, old, new):
    kernels = getattr(importlib.import_module(f"generated.kernels.{module}"), direction)[variant]
    assert old in kernels.sources["cuda"], f"the kernel no longer contains {old!r}"
    monkeypatch.setitem(kernels.sources, "cuda", kernels.sources["cuda"].replace(old, new, 1))


CE = checks.Case("cross_entropy", (), "indices", targets=True)


def test_a_missing_syncthreads_fails(monkeypatch, emulated):
    _plant(monkeypatch, "cross_entropy", "_indices", "FORWARD", "__syncthreads();\nacc_", "acc_")
    with pytest.raises(harness.KernelError, match="data race"):
        checks.check(CE, checks.Setting((3, 300), "none", axis=-1), "float32", "cuda", emulated)


def test_a_wrong_index_fails(monkeypatch, emulated):
    _plant(monkeypatch, "cross_entropy", "_indices", "BACKWARD", "logits_in[at]", "logits_in[base + j]")
    with pytest.raises(AssertionError, match="differs from the float64 reference"):
        checks.check(CE, checks.Setting((4, 37, 3), "sum", axis=1), "float32", "cuda", emulated)
