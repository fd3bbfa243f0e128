"""The GPU backend (Metal and CUDA): ``printer`` prints the lowered programs as C, ``kernels`` lays them out
as kernels from ``templates/gpu/``, ``traffic`` counts their memory traffic, ``module`` renders
``kernels/<loss>.py`` and the runtime ``_gpu.py``."""

from .module import module_path, package_files, render

__all__ = ["module_path", "package_files", "render"]
