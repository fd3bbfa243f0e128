"""The backends: each prints the lowered programs in its own language and renders its files of the package.

``mlx``: the public function of each loss and its MLX bodies (Python).
``gpu``: the Metal and CUDA kernels of each loss, and the runtime that launches them.
``source``: what both share (templates, the generated-file header, docstring literals).
"""
