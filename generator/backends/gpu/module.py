"""The GPU backend's files in the package: ``kernels/<loss>.py`` for each loss, and the runtime ``_gpu.py``.

A loss's kernel module lists the Metal and CUDA source of each variant's
forward and backward kernel with the arguments it takes; ``_gpu.py`` builds
them with ``mx.fast.metal_kernel`` / ``mx.fast.cuda_kernel`` and launches them.
"""

from __future__ import annotations

from ...spec.vocabulary import Input
from ..source import docstring, header
from . import lattice, traffic
from .kernels import ELEMENT_THREADS, headers, kernels


def module_path(name):
    """Where the kernels of the loss ``name`` lie in the package."""
    return f"kernels/{name}.py"


def render(env, loss, variants):
    """The source of the package's ``kernels/<loss>.py``: the Metal and CUDA kernels of ``derive(loss)``'s variants."""
    if loss.kind == "recurrence":
        return lattice.render(env, loss, variants)
    built = kernels(loss, variants)
    setting = "float32 arrays, reduction='mean'" + (
        f", rows of {traffic.ROW_LENGTH}" if loss.kind == "rowwise" else ""
    )
    text = "\n".join([
        f"{loss.name}: Metal and CUDA kernels, generated from {loss.source}.",
        "",
        "Lowered from the same scheduled statements as the MLX path and used on GPUs",
        "(see _gpu.py in this package). Bytes each kernel moves per element against the minimum",
        f"(each input read once, each output written once; {setting}):",
        "",
        *[f"    {figure}" for figure in traffic.figures_of(loss, built)],
    ])
    ignore = next((t for t in loss.class_targets if t.ignore_index is not None), None)
    return env.get_template("gpu/kernels.py.j2").render(
        header=header(loss.source),
        docstring=docstring(text),
        name=loss.name,
        rowwise=loss.kind == "rowwise",
        variants=built,
        inputs=tuple(i.name for i in loss.inputs),
        row_inputs=tuple(i.name for i in loss.inputs if isinstance(i, Input) and i.per_row),
        differentiable=tuple(i.name for i in loss.inputs if i.differentiable),
        weighted=loss.weights is not None,
        target=repr(loss.class_targets[0].name) if loss.class_targets else None,
        ignore=loss.numeric_params.index(ignore.ignore_index) if ignore else None,
    )


def package_files(env, names):
    """The files the GPU backend adds to the package once: its runtime and the kernels' package."""
    gpu_headers = headers()
    return {
        "kernels/__init__.py": header("specs/") + '\n"""The Metal and CUDA kernels of each loss."""\n',
        "_gpu.py": env.get_template("gpu/_gpu.py.j2").render(
            header=header("templates/gpu/_gpu.py.j2"),
            metal_header=gpu_headers["metal"],
            cuda_header=gpu_headers["cuda"],
            element_threads=ELEMENT_THREADS,
        ),
    }
