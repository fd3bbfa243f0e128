"""Add a new loss from a spec, end to end, outside the repository's specs/.

1. Write a spec (the pseudo-Huber loss, which MLX does not have) into a folder.
2. Compile it: ``losscc generate --specs DIR/specs --out DIR/my_losses``.
3. Import ``my_losses.pseudo_huber_loss`` and use it: its value and its
   symbolically derived gradient are compared with the formula written by hand
   in MLX (differentiated by ``mx.grad``), then it fits a robust location.

Run from the repository root:

    python -m examples.new_loss                   # in a temporary folder
    python -m examples.new_loss --workdir /tmp/x  # keep the spec and the package
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path

import mlx.core as mx

SPEC = '''\
"""Pseudo-Huber loss: quadratic near zero, linear far away, smooth everywhere."""

from sympy import sqrt

from generator.spec import Input, Loss, Param, Term

predictions = Input("predictions", doc="The predicted values.")
targets = Input("targets", doc="The target values.")
delta = Param("delta", 1.0, range="(0, inf)", doc="The scale at which the loss turns from quadratic to linear.")

error = Term("error", predictions - targets)

spec = Loss(
    "pseudo_huber_loss",
    inputs=[predictions, targets],
    params=[delta],
    reduction="mean",
    broadcast=True,
    doc="Computes the pseudo-Huber loss delta**2 * (sqrt(1 + (error / delta)**2) - 1).",
    elementwise=delta**2 * (sqrt(1 + (error / delta) ** 2) - 1),
)
'''
TOLERANCE = 1e-5  # float32 relative error between the generated code and the hand-written formula


def by_hand(predictions, targets, delta):
    """The same loss written directly in MLX (mean reduction), for comparison."""
    error = predictions - targets
    return mx.mean(delta**2 * (mx.sqrt(1 + (error / delta) ** 2) - 1))


def relative_error(a, b):
    return (mx.max(mx.abs(a - b)) / mx.maximum(mx.max(mx.abs(b)), 1e-30)).item()


def compile_spec(workdir):
    """Steps 1 and 2: the spec file, then the losscc command line. Returns the package folder."""
    specs = workdir / "specs"
    specs.mkdir(parents=True, exist_ok=True)
    (specs / "pseudo_huber_loss.py").write_text(SPEC)
    package = workdir / "my_losses"
    command = [sys.executable, "-m", "generator", "generate", "--specs", str(specs), "--out", str(package)]
    print("$ python", " ".join(command[1:]))
    subprocess.run(command, check=True)
    return package


def import_package(package):
    """Import the generated package from its folder (a fresh import each time)."""
    sys.path.insert(0, str(package.parent))
    try:
        for name in [n for n in sys.modules if n == package.name or n.startswith(package.name + ".")]:
            del sys.modules[name]
        return importlib.import_module(package.name)
    finally:
        sys.path.remove(str(package.parent))


def use(my_losses, size, steps):
    """Step 3: check the value and gradient against the hand-written formula, then fit."""
    loss = my_losses.pseudo_huber_loss
    print(loss.__doc__.split("Args:")[0].strip(), "\n")
    k_p, k_t = mx.random.split(mx.random.key(0))
    predictions = 3 * mx.random.normal((size,), key=k_p)
    targets = 3 * mx.random.normal((size,), key=k_t)
    value_error = relative_error(loss(predictions, targets, delta=0.5), by_hand(predictions, targets, 0.5))
    derived = mx.grad(lambda p: loss(p, targets, delta=0.5))(predictions)
    traced = mx.grad(lambda p: by_hand(p, targets, 0.5))(predictions)
    gradient_error = relative_error(derived, traced)
    print(f"value vs the formula by hand: relative error {value_error:.1e}")
    print(f"derived gradient vs mx.grad of the formula by hand: relative error {gradient_error:.1e}")

    # A robust location: the data are 0 plus noise, with a tenth of them moved to 20.
    data = mx.concatenate([0.5 * mx.random.normal((size - size // 10,), key=k_t), mx.full((size // 10,), 20.0)])
    location = mx.array(0.0)
    gradient = mx.grad(lambda m: loss(mx.broadcast_to(m, data.shape), data))
    for _ in range(steps):
        location = location - 1.0 * gradient(location)
    print(f"fitted location {location.item():.3f}, near the bulk of the data at 0 "
          f"(their mean, pulled by the outliers: {mx.mean(data).item():.3f})")
    return value_error, gradient_error


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="Keep the spec and the package here (default: a temporary folder).")
    parser.add_argument("--size", type=int, default=10_000, help="Elements in the checks.")
    parser.add_argument("--steps", type=int, default=100, help="Gradient steps of the fit.")
    args = parser.parse_args(argv)
    folder = contextlib.nullcontext(args.workdir) if args.workdir else tempfile.TemporaryDirectory()
    with folder as workdir:
        value_error, gradient_error = use(import_package(compile_spec(Path(workdir))), args.size, args.steps)
    if max(value_error, gradient_error) > TOLERANCE:
        print(f"the generated loss disagrees with the formula (tolerance {TOLERANCE:.0e})")
        return 1
    print(f"the generated loss agrees with the formula (tolerance {TOLERANCE:.0e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
