"""value_and_grad peaks at most MLX's own autodiff, as called and under ``mx.compile``.

``make bench``'s memory section gives every loss's figures. Here, on the loss
each one matters to, at the bench's size (2^22 elements), the choices those
figures rest on. In float32:

- a row-wise loss holds per-row values alone for its backward, which computes
  the element-level ones again on chunks of the rows (holding exp(logits -
  max), cross_entropy as called peaked at 1.17 times MLX's autodiff, and
  kl_div_loss compiled at 1.04, holding exp(targets)).

In bfloat16:

- each gradient computed by itself and in chunks of the rows (as called, MLX
  runs a compiled program uncompiled inside value_and_grad, so an unchunked
  backward makes float32 temporaries the size of the input): hinge_loss;
- the backward's chunks read after the cotangent (else MLX's compiler merges
  them with the forward's chunks and holds their float32 values whole from
  the forward to the backward): kl_div_loss under ``mx.compile``;
- a gradient that is another's negated is taken from that one whole, not
  made in its chunks (a second output of every chunk): mse_loss;
- an elementwise forward's chunks half as large for half-precision inputs
  (its float32 values are twice their size): binary_cross_entropy as called.

The bound is the better of MLX's eager and compiled autodiff of
``mlx.nn.losses`` on the same inputs, measured in the same process, plus 2%.
"""

from __future__ import annotations

import mlx.nn.losses as reference
import pytest

import generated
from generator.tools import bench, bench_memory

SIZE = 2**22
CASES = [("cross_entropy", "float32"), ("kl_div_loss", "float32"),
         *((name, "bfloat16") for name in ["binary_cross_entropy", "hinge_loss", "kl_div_loss", "mse_loss"])]


@pytest.mark.parametrize("name,dtype", CASES)
def test_value_and_grad_peaks_at_most_mlx_autodiff(name, dtype):
    spec = next(s for s in bench.benchmark_losses() if s.name == name)
    case = bench.make_case(spec, SIZE)
    peaks = bench_memory.measure_case(case, getattr(generated, name), getattr(reference, name), dtype)
    best = min(peaks["eager"], peaks["compiled"])
    mib = {variant: round(peak / 2**20, 1) for variant, peak in peaks.items()}
    assert peaks["generated"] <= best * bench_memory.MARGIN, f"as called: {mib}"
    assert peaks["generated_compiled"] <= best * bench_memory.MARGIN, f"under mx.compile: {mib}"
