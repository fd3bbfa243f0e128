"""The MLX backend: ``printer`` prints the lowered programs as MLX ops, ``programs`` builds each variant's
forward and backward, ``module`` renders ``<loss>.py`` from ``templates/mlx/``."""

from .module import exported, linear_kind, module_path, package_files, render

__all__ = ["exported", "linear_kind", "module_path", "package_files", "render"]
