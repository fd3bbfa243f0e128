"""Build a throwaway generated package from spec sources, for tests."""

from __future__ import annotations

import importlib
import sys
import uuid
from pathlib import Path

import mlx.core as mx
import numpy as np

from generator.render import render_package, write_package

ROOT = Path(__file__).resolve().parent.parent  # the repository


def build_package(tmp_path: Path, specs: dict):
    """Write ``specs`` ({loss name: source}) to tmp_path/specs, generate, import the package."""
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir(parents=True, exist_ok=True)
    for name, source in specs.items():
        (spec_dir / f"{name}.py").write_text(source)
    package = f"generated_{uuid.uuid4().hex[:12]}"
    write_package(render_package(spec_dir), tmp_path / package)
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(package)
    finally:
        sys.path.remove(str(tmp_path))


def close_to_scale(got, want, what, tolerance=1e-5):
    """``got`` equals ``want`` (NaN where it is NaN) to ``tolerance`` relative to each element or to
    ``want``'s largest magnitude (at least 1): float32 rounding of values summed over many terms."""
    got, want = np.asarray(got.astype(mx.float32)), np.asarray(want.astype(mx.float32))
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    assert np.allclose(got, want, rtol=tolerance, atol=tolerance * scale, equal_nan=True), \
        f"{what}: largest difference {np.max(np.abs(got - want))}"


def hessian_vector_products(function, arrays, directions):
    """The gradient of ``sum(grad(function) . directions)`` in each of ``arrays``: second order by MLX."""
    argnums = list(range(len(arrays)))
    grad = mx.grad(function, argnums=argnums)
    along = lambda *a: sum(mx.sum(g * v) for g, v in zip(grad(*a), directions))
    return mx.grad(along, argnums=argnums)(*arrays)


def check_vmapped_derivatives(function, reference, batch, fixed, tolerance=1e-4, seed=0):
    """The gradient of ``function(item, *fixed)`` vmapped over ``batch``'s first axis (each item's loss
    weighted), and that of its vmapped gradient along directions, equal ``reference``'s item by item.

    MLX's own vmap of a custom function maps its forward alone: these were silently 0.
    """
    rng = np.random.default_rng(seed)
    weight = mx.array(rng.normal(size=batch.shape[0]).astype(np.float32))
    directions = mx.array(rng.normal(size=batch.shape).astype(np.float32))
    items = range(batch.shape[0])
    got = mx.grad(lambda b: mx.sum(mx.vmap(lambda x: function(x, *fixed))(b) * weight))(batch)
    want = mx.grad(lambda b: sum(reference(b[k], *fixed) * weight[k] for k in items))(batch)
    close_to_scale(got, want, "grad of vmap", tolerance)
    gradient = lambda f: mx.grad(lambda x: f(x, *fixed))
    got = mx.grad(lambda b: mx.sum(mx.vmap(gradient(function))(b) * directions))(batch)
    want = mx.grad(lambda b: sum(mx.sum(gradient(reference)(b[k]) * directions[k]) for k in items))(batch)
    close_to_scale(got, want, "grad of vmap of grad", tolerance)
