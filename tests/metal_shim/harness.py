"""Run Metal and CUDA kernels on the CPU: exact MLX source, compiled with g++, emulated.

* Metal: the source is what MLX itself generates for the kernel call
  (``mx.export_function`` with ``verbose=True`` prints it on Linux, signature
  and template instantiation included).
* CUDA: MLX's CPU build cannot build a CUDA kernel, so the source is laid out
  as MLX 0.32's ``mlx/backend/cuda/custom_kernel.cpp`` does (its default
  header, the signature, ``using T = ...;``, the body).

The source is compiled as C++20 against ``metal_stdlib.h`` or
``cuda_emulation.h`` together with a driver generated from its signature, and
executed over every thread of the grid by ``emulator.hpp``, twice: with the
threads of a threadgroup in ascending and in descending order between
synchronisation points. Both runs must give the same bytes (a data race, such
as a missing barrier, changes them), and the emulator's own checks (barriers
reached by every thread, no write past an output) must pass.

:class:`EmulatedKernels` replaces ``mx.fast.metal_kernel`` / ``cuda_kernel``
so that a generated loss runs end to end through emulated kernels.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

SHIM = Path(__file__).resolve().parent
NVCC = shutil.which("nvcc") or ("/usr/local/bin/nvcc" if os.path.exists("/usr/local/bin/nvcc") else None)
REAL_METAL_KERNEL = mx.fast.metal_kernel

# Doubles and 16-bit arithmetic are compile errors (see metal_stdlib.h); unknown
# Metal attributes such as [[buffer(0)]] are ignored.
CXX_FLAGS = ["g++", "-std=c++20", "-O1", "-Wno-attributes", "-Werror=double-promotion", "-Werror=float-conversion"]

_METAL_TYPES = {
    mx.float32: "float", mx.float16: "float16_t", mx.bfloat16: "bfloat16_t", mx.int32: "int32_t",
    mx.int64: "int64_t", mx.uint32: "uint32_t", mx.uint64: "uint64_t", mx.int16: "int16_t",
    mx.uint16: "uint16_t", mx.int8: "int8_t", mx.uint8: "uint8_t", mx.bool_: "bool",
}
_CUDA_TYPES = {**_METAL_TYPES, mx.float16: "__half", mx.bfloat16: "__nv_bfloat16"}


class KernelError(AssertionError):
    """A kernel that does not compile, breaks an emulator check, or races."""


def _workdir():
    global _WORKDIR
    if _WORKDIR is None:
        _WORKDIR = Path(tempfile.mkdtemp(prefix="losscc-kernels-"))
        atexit.register(shutil.rmtree, _WORKDIR, True)
    return _WORKDIR


_WORKDIR = None


# ---------------------------------------------------------------- exact source

def _capture_stdout(action):
    """What ``action`` prints on file descriptor 1 (C++ output included)."""
    sys.stdout.flush()
    with tempfile.TemporaryFile(mode="w+") as sink:
        saved = os.dup(1)
        os.dup2(sink.fileno(), 1)
        try:
            action()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        sink.seek(0)
        return sink.read()


_metal_sources = {}


def metal_source(name, input_names, output_names, source, header, inputs, template, grid, threadgroup,
                 output_shapes, output_dtypes, init_value=None, atomic_outputs=False):
    """The exact Metal source MLX generates for this kernel call."""
    key = (name, source, header, atomic_outputs, tuple(template or ()), tuple(map(str, output_dtypes)),
           tuple((str(a.dtype), a.ndim == 0, a.size < 8) for a in inputs))
    if key not in _metal_sources:
        kernel = REAL_METAL_KERNEL(
            name=name, input_names=input_names, output_names=output_names, source=source, header=header,
            atomic_outputs=atomic_outputs,
        )

        def call(*arrays):
            return kernel(
                inputs=list(arrays), template=template, grid=grid, threadgroup=threadgroup,
                output_shapes=output_shapes, output_dtypes=output_dtypes, init_value=init_value, verbose=True,
            )

        placeholders = [mx.zeros(a.shape, a.dtype) for a in inputs]
        with tempfile.TemporaryDirectory() as scratch:
            printed = _capture_stdout(lambda: mx.export_function(f"{scratch}/kernel.mlxfn", call, *placeholders))
        match = re.search(r"Generated source code for `[^`]*`:\n```\n(.*)\n```", printed, re.S)
        if not match:
            raise KernelError(f"MLX printed no Metal source for {name}:\n{printed}")
        _metal_sources[key] = match.group(1)
    return _metal_sources[key]


def _type_string(dtype):
    return _METAL_TYPES[dtype]


def cuda_source(name, input_names, output_names, source, header, inputs, template, output_dtypes):
    """The CUDA source MLX 0.32 builds for this kernel call (mlx/backend/cuda/custom_kernel.cpp)."""
    suffix = ""
    for _, value in template or ():
        if isinstance(value, bool):
            suffix += "_t" if value else "_f"
        elif isinstance(value, int):
            suffix += f"_{value}"
        else:
            suffix += "_" + _type_string(value)
    lines = [
        '\n#include "mlx/backend/cuda/device/utils.cuh"\n\n#include <cooperative_groups.h>\n\n' + header,
        "namespace mlx::core::cu {\n\nnamespace cg = cooperative_groups;\n\n",
        f"__global__ void custom_kernel_{name}{suffix}(\n",
    ]
    for input_name, array in zip(input_names, inputs):
        lines.append(f"    const {_CUDA_TYPES[array.dtype]}* {input_name},\n")
        if array.ndim > 0:
            for part, kind in (("_shape", "Shape"), ("_strides", "Strides"), ("_ndim", "int")):
                if input_name + part in source:
                    lines.append(f"    const __grid_constant__ {kind} {input_name}{part},\n")
    for index, (output_name, dtype) in enumerate(zip(output_names, output_dtypes)):
        end = ",\n" if index < len(output_names) - 1 else ") {\n"
        lines.append(f"    {_CUDA_TYPES[dtype]}* {output_name}{end}")
    if template:
        for argument, value in template:
            if isinstance(value, bool):
                lines.append(f"  constexpr bool {argument} = {'true' if value else 'false'};\n")
            elif isinstance(value, int):
                lines.append(f"  constexpr int {argument} = {value};\n")
            else:
                lines.append(f"  using {argument} = {_CUDA_TYPES[value]};\n")
        lines.append("\n")
    lines.append(source + "\n}\n\n} // namespace mlx::core::cu\n")
    return "".join(lines)


# ---------------------------------------------------------------- compilation

@dataclass
class Parameter:
    name: str
    ctype: str
    kind: str  # "input" | "output" | "attribute"
    by_reference: bool = False


def _metal_signature(text):
    match = re.search(r"\[\[kernel\]\] void (\w+)\(\n(.*?)\) \{\n", text, re.S)
    if not match:
        raise KernelError("no kernel signature in the Metal source")
    name, body = match.groups()
    parameters = []
    for line in body.split(",\n"):
        line = line.strip()
        buffer = re.fullmatch(r"(const )?(device|constant) (atomic<)?([\w:]+)>? ?([*&]) (\w+) \[\[buffer\(\d+\)\]\]", line)
        attribute = re.fullmatch(r"(uint3|uint) (\w+) \[\[(\w+)\]\]", line)
        if buffer:
            const, _, atomic, ctype, pointer, argument = buffer.groups()
            if atomic:
                raise KernelError("atomic outputs are not emulated")
            kind = "input" if const else "output"
            parameters.append(Parameter(argument, ctype, kind, pointer == "&"))
        elif attribute:
            parameters.append(Parameter(attribute.group(2), attribute.group(1), "attribute"))
        else:
            raise KernelError(f"unexpected kernel parameter: {line!r}")
    instance = re.search(rf"decltype\(({name}<[^>]*>)\)", text)
    return (instance.group(1) if instance else name), parameters


def _cuda_signature(text):
    match = re.search(r"__global__ void (\w+)\(\n(.*?)\) \{\n", text, re.S)
    if not match:
        raise KernelError("no kernel signature in the CUDA source")
    name, body = match.groups()
    parameters = []
    for line in body.split(",\n"):
        line = line.strip()
        pointer = re.fullmatch(r"(const )?([\w:]+)\* (\w+)", line)
        if not pointer:
            raise KernelError(f"unexpected kernel parameter: {line!r}")
        const, ctype, argument = pointer.groups()
        parameters.append(Parameter(argument, ctype, "input" if const else "output"))
    return f"mlx::core::cu::{name}", parameters


_METAL_ATTRIBUTES = {
    "thread_position_in_grid": "to_uint3(t.position_in_grid)",
    "threadgroup_position_in_grid": "to_uint3(t.group_position)",
    "thread_position_in_threadgroup": "to_uint3(t.position_in_group)",
    "threads_per_threadgroup": "to_uint3(t.group_size)",
    "threadgroups_per_grid": "to_uint3(t.groups_per_grid)",
    "threads_per_grid": "to_uint3(t.grid_size)",
    "grid_size": "to_uint3(t.grid_size)",
    "thread_index_in_threadgroup": "t.index_in_group",
    "thread_index_in_simdgroup": "t.lane",
    "simdgroup_index_in_threadgroup": "t.simdgroup",
    "simdgroups_per_threadgroup": "t.simdgroups_per_group",
    "threads_per_simdgroup": "32u",
    "thread_execution_width": "32u",
}


def _launch(backend, index, function, parameters):
    """The driver code that runs kernel ``index`` (``function`` with ``parameters``)."""
    inputs = [p for p in parameters if p.kind == "input"]
    outputs = [p for p in parameters if p.kind == "output"]
    arguments, counts = [], {"input": 0, "output": 0}
    for p in parameters:
        if p.kind == "attribute":
            if p.name not in _METAL_ATTRIBUTES:
                raise KernelError(f"attribute {p.name} is not emulated")
            arguments.append(_METAL_ATTRIBUTES[p.name])
            continue
        buffers = "inputs" if p.kind == "input" else "outputs"
        const = "const " if p.kind == "input" else ""
        pointer = f"reinterpret_cast<{const}{p.ctype}*>(run.{buffers}[{counts[p.kind]}].data())"
        arguments.append(f"*{pointer}" if p.by_reference else pointer)
        counts[p.kind] += 1
    partial = "true" if backend == "metal" else "false"  # Metal dispatches exact grids, CUDA whole blocks
    return (
        f"  if (which == {index}) {{\n"
        f"    emu::Run run(argc - 1, argv + 1, {len(inputs)}, {len(outputs)});\n"
        f"    emu::launch(run.grid, run.group, {partial}, run.descending, [&](const emu::ThreadInfo& t) {{\n"
        f"      (void)t;\n      kernel{index}::{function}({', '.join(arguments)});\n"
        "    });\n    run.finish();\n    return 0;\n  }\n"
    )


def _precompiled(backend):
    """A folder with the shim and its precompiled driver prelude (built once per session)."""
    folder = _workdir() / f"shim-{backend}"
    if not folder.exists():
        staging = Path(tempfile.mkdtemp(dir=_workdir()))
        shutil.copytree(SHIM, staging / "shim", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        prelude = staging / "shim" / f"{backend}_driver.h"
        include = ["-I", str(staging / "shim")] + (
            ["-I", str(staging / "shim" / "cuda_emulation")] if backend == "cuda" else []
        )
        _compile([*CXX_FLAGS, *include, "-x", "c++-header", str(prelude), "-o", f"{prelude}.gch"])
        _compile([*CXX_FLAGS, "-c", str(staging / "shim" / "emulator.cpp"), "-o", str(staging / "shim" / "emulator.o")])
        os.rename(staging / "shim", folder)
    return folder


def _compile(command):
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise KernelError(f"compilation failed: {' '.join(command)}\n{done.stderr[-6000:]}")


_executables = {}  # (backend, text) -> (program, kernel index, parameters)


def _build(backend, texts):
    """One emulator program running any of ``texts`` (each kernel in its own namespace)."""
    shim = _precompiled(backend)
    folder = Path(tempfile.mkdtemp(dir=_workdir()))
    parts = [f'#include "{backend}_driver.h"\n']
    launches = []
    signatures = []
    for index, text in enumerate(texts):
        (folder / f"kernel{index}.inc").write_text(text)
        parts.append(f'namespace kernel{index} {{\n#include "kernel{index}.inc"\n}}\n')
        function, parameters = (_metal_signature if backend == "metal" else _cuda_signature)(text)
        launches.append(_launch(backend, index, function, parameters))
        signatures.append(parameters)
    parts.append("\nint main(int argc, char** argv) {\n  const int which = std::atoi(argv[1]);\n")
    parts += launches
    parts.append('  emu::fail("no such kernel");\n}\n')
    (folder / "driver.cpp").write_text("".join(parts))
    include = ["-I", str(shim)] + (["-I", str(shim / "cuda_emulation")] if backend == "cuda" else [])
    _compile([*CXX_FLAGS, *include, "-I", str(folder), str(folder / "driver.cpp"), str(shim / "emulator.o"),
              "-o", str(folder / "run")])
    for index, (text, parameters) in enumerate(zip(texts, signatures)):
        _executables[backend, text] = (folder / "run", index, parameters)


def prefetch(backend, texts, jobs=2):
    """Compile the programs for ``texts`` ahead of use: a few kernels per g++ run, ``jobs`` runs at once.

    A group that fails to compile is left alone: its kernels compile one by one
    when they run, so the error shows in the test that uses them.
    """
    missing = sorted({t for t in texts if (backend, t) not in _executables})
    if not missing:
        return
    _precompiled(backend)
    groups = [missing[k::jobs * 4] for k in range(min(len(missing), jobs * 4))]

    def build(group):
        try:
            _build(backend, group)
        except KernelError:
            pass

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(build, groups))


def executable(backend, text):
    """The emulator program running kernel source ``text``, and the kernel's index and parameters."""
    if (backend, text) not in _executables:
        _build(backend, [text])
    return _executables[backend, text]


# ---------------------------------------------------------------- execution

def to_bytes(array):
    """The raw bytes of an MLX array (row-major)."""
    if array.dtype == mx.bfloat16:
        array = array.view(mx.uint16)
    return np.ascontiguousarray(np.array(array)).tobytes()


def from_bytes(data, shape, dtype):
    if dtype == mx.bfloat16:
        return mx.array(np.frombuffer(data, dtype=np.uint16).reshape(shape)).view(mx.bfloat16)
    numpy_dtype = np.dtype(str(dtype).split(".")[-1] if dtype != mx.bool_ else "bool")
    return mx.array(np.frombuffer(data, dtype=numpy_dtype).reshape(shape))


def execute(backend, text, inputs, grid, threadgroup, output_shapes, output_dtypes, init_value=None):
    """Run kernel source ``text`` on ``inputs`` over ``grid``: the outputs as MLX arrays.

    The threads run in ascending, then descending order; the outputs must agree.
    """
    program, kernel_index, _ = executable(backend, text)
    results = []
    for descending in (False, True):
        with tempfile.TemporaryDirectory(dir=_workdir()) as run_dir:
            for index, array in enumerate(inputs):
                Path(run_dir, f"in{index}.bin").write_bytes(to_bytes(array))
            for index, (shape, dtype) in enumerate(zip(output_shapes, output_dtypes)):
                size = int(np.prod(shape)) * dtype.size
                initial = b"\xff" * size if init_value is None else to_bytes(mx.full(shape, init_value, dtype))
                Path(run_dir, f"out{index}.bin").write_bytes(initial)
            command = [str(program), str(kernel_index), str(int(descending)), *map(str, grid),
                       *map(str, threadgroup), run_dir]
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise KernelError(f"kernel run failed ({done.returncode}): {done.stderr.strip()}")
            results.append([Path(run_dir, f"out{k}.bin").read_bytes() for k in range(len(output_shapes))])
    if results[0] != results[1]:
        raise KernelError("the outputs depend on the order the threads run in: a data race (missing barrier?)")
    return [from_bytes(data, shape, dtype) for data, shape, dtype in zip(results[0], output_shapes, output_dtypes)]


# ---------------------------------------------------------------- drop-in kernels

def _in_a_trace(arrays):
    """Whether a kernel is launched while MLX traces a transformation (``mx.vmap``): its inputs have
    no values yet. On a GPU the launch is a lazy node of the graph; here it returns zeros, which the
    transformation's own rule (the MLX bodies) replaces, and any use of them fails its test."""
    try:
        mx.eval(arrays)
    except ValueError as error:
        if "function transformations" not in str(error):
            raise
        return True
    return False


class EmulatedKernels:
    """Stand-ins for ``mx.fast.metal_kernel`` and ``mx.fast.cuda_kernel`` that run the emulator.

    ``launches`` records every kernel run: (backend, name, source text, grid, threadgroup). With
    ``execute=False`` the kernels only record their source and return zeros.
    """

    def __init__(self, execute=True):
        self.launches = []
        self.execute = execute

    def _run(self, backend, text, inputs, grid, threadgroup, output_shapes, output_dtypes, init_value):
        if not self.execute or _in_a_trace(inputs):
            return [mx.zeros(shape, dtype) for shape, dtype in zip(output_shapes, output_dtypes)]
        return execute(backend, text, inputs, grid, threadgroup, output_shapes, output_dtypes, init_value)

    def metal_kernel(self, name, input_names, output_names, source, header="", ensure_row_contiguous=True,
                     atomic_outputs=False, compile_options=None):
        def call(inputs, output_shapes, output_dtypes, grid, threadgroup, template=None, init_value=None,
                 verbose=False, stream=None):
            inputs = [mx.array(a) if not isinstance(a, mx.array) else a for a in inputs]
            text = metal_source(name, input_names, output_names, source, header, inputs, template, grid,
                                threadgroup, output_shapes, output_dtypes, init_value, atomic_outputs)
            self.launches.append(("metal", name, text, grid, threadgroup))
            return self._run("metal", text, inputs, grid, threadgroup, output_shapes, output_dtypes, init_value)
        return call

    def cuda_kernel(self, name, input_names, output_names, source, header="", ensure_row_contiguous=True,
                    shared_memory=0):
        def call(inputs, output_shapes, output_dtypes, grid, threadgroup, template=None, init_value=None,
                 verbose=False, stream=None):
            inputs = [mx.array(a) if not isinstance(a, mx.array) else a for a in inputs]
            text = cuda_source(name, input_names, output_names, source, header, inputs, template, output_dtypes)
            self.launches.append(("cuda", name, text, grid, threadgroup))
            return self._run("cuda", text, inputs, grid, threadgroup, output_shapes, output_dtypes, init_value)
        return call


def nvcc_compile(sources, arch="sm_90"):
    """Compile CUDA kernel sources with nvcc to device code (a cubin, as NVRTC gives MLX), one
    translation unit with each kernel in its own namespace; warnings are errors."""
    if NVCC is None:
        raise RuntimeError("nvcc is not installed")
    folder = Path(tempfile.mkdtemp(dir=_workdir()))
    parts = ['#include "mlx/backend/cuda/device/utils.cuh"\n#include <cooperative_groups.h>\n']
    for index, text in enumerate(sources):
        parts.append(f"namespace kernel{index} {{\n{text}\n}}  // namespace kernel{index}\n")
    (folder / "kernels.cu").write_text("".join(parts))
    command = [NVCC, "-std=c++17", f"-arch={arch}", "--cubin", "-Werror", "all-warnings", "-I", str(SHIM / "nvcc"),
               str(folder / "kernels.cu"), "-o", str(folder / "kernels.cubin")]
    _compile(command)
    return folder / "kernels.cubin"
