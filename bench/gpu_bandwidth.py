"""Run the generated CUDA kernels on an NVIDIA GPU: check them, and measure their bandwidth.

Not part of CI (it needs a GPU). On a machine with an NVIDIA GPU and MLX's CUDA
back-end (``pip install "mlx[cuda]"``), from the repository root::

    python bench/gpu_bandwidth.py                       # 2**24 elements, a few losses
    python bench/gpu_bandwidth.py --elements 67108864 --losses mse_loss,cross_entropy

For each loss it

1. checks the CUDA path (``generated.set_backend("cuda")``) against the MLX ops
   run on the CPU, loss and gradients, on the same inputs;
2. times the forward (``reduction="mean"``) and the forward plus backward
   (``mx.grad``) on the GPU, and reports the backward as their difference;
3. reports the bandwidth each achieves: the least bytes its math needs (every
   input read once, every output written once) divided by its time, against a
   device-to-device copy of the same number of bytes (``mx.negative``: one
   read, one write, the fastest any kernel can stream memory).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

import generated  # noqa: E402

ROW_LENGTH = 4096  # classes per row of the row-wise losses


def inputs(name, elements, dtype):
    """Arguments of ``name`` with ``elements`` elements: (positional arrays, keywords, differentiable count)."""
    key = mx.random.key(0)
    normal = lambda shape: mx.random.normal(shape, key=key).astype(dtype)
    if name in ("cross_entropy", "nll_loss"):
        rows = elements // ROW_LENGTH
        targets = mx.random.randint(0, ROW_LENGTH, (rows,), key=key)
        return [normal((rows, ROW_LENGTH)), targets], {}, 1
    if name in ("kl_div_loss", "cosine_similarity_loss"):
        rows = elements // ROW_LENGTH
        return [normal((rows, ROW_LENGTH)), normal((rows, ROW_LENGTH))], {}, 2
    if name == "binary_cross_entropy":
        return [normal((elements,)), (mx.random.uniform(shape=(elements,), key=key) > 0.5).astype(dtype)], {}, 2
    return [normal((elements,)), normal((elements,))], {}, 2


def least_bytes(arrays, differentiable):
    """Forward: read every array; backward: read them again and write a gradient per differentiable one."""
    read = sum(a.nbytes for a in arrays)
    return read, read + sum(a.nbytes for a in arrays[:differentiable])


def timed(step, repeats):
    for _ in range(3):
        mx.eval(step())
    mx.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        mx.eval(step())
    mx.synchronize()
    return (time.perf_counter() - start) / repeats


def check(function, arrays, keywords, differentiable):
    """The CUDA path against the MLX ops on the CPU: loss and gradients."""
    argnums = list(range(differentiable))
    grad = mx.value_and_grad(lambda *a: function(*a, reduction="mean", **keywords), argnums=argnums)
    generated.set_backend("cuda")
    value, grads = grad(*arrays)
    generated.set_backend("mlx")
    with mx.stream(mx.cpu):
        expected_value, expected_grads = grad(*arrays)
    for got, expected in zip([value, *grads], [expected_value, *expected_grads]):
        got, expected = np.array(got.astype(mx.float32)), np.array(expected.astype(mx.float32))
        error = np.max(np.abs(got - expected)) / (np.max(np.abs(expected)) + 1e-30)
        if not error < 1e-3:
            raise SystemExit(f"{function.__name__}: the CUDA kernels differ from the CPU by {error:.3g}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--elements", type=int, default=2**24)
    parser.add_argument("--losses", default="mse_loss,huber_loss,binary_cross_entropy,cross_entropy,kl_div_loss")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=20)
    options = parser.parse_args()
    if not mx.cuda.is_available():
        raise SystemExit("no CUDA back-end: run this on an NVIDIA GPU with mlx[cuda] installed")
    dtype = getattr(mx, options.dtype)

    copy_input = mx.random.normal((options.elements,)).astype(dtype)
    copy_time = timed(lambda: mx.negative(copy_input), options.repeats)
    copy_rate = 2 * copy_input.nbytes / copy_time / 1e9
    print(f"device-to-device copy ({options.elements} x {options.dtype}): {copy_rate:7.1f} GB/s")
    print(f"{'loss':24s} {'forward GB/s':>13s} {'of copy':>8s} {'backward GB/s':>14s} {'of copy':>8s}")
    for name in options.losses.split(","):
        function = getattr(generated, name)
        arrays, keywords, differentiable = inputs(name, options.elements, dtype)
        check(function, arrays, keywords, differentiable)
        generated.set_backend("cuda")
        forward = lambda: function(*arrays, reduction="mean", **keywords)
        both = mx.grad(lambda *a: function(*a, reduction="mean", **keywords), argnums=list(range(differentiable)))
        forward_time = timed(forward, options.repeats)
        backward_time = max(timed(lambda: both(*arrays), options.repeats) - forward_time, math.ulp(1.0))
        generated.set_backend(None)
        forward_bytes, backward_bytes = least_bytes(arrays, differentiable)
        forward_rate = forward_bytes / forward_time / 1e9
        backward_rate = backward_bytes / backward_time / 1e9
        print(f"{name:24s} {forward_rate:13.1f} {forward_rate / copy_rate:8.2f} "
              f"{backward_rate:14.1f} {backward_rate / copy_rate:8.2f}")


if __name__ == "__main__":
    main()
