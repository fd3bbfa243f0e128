"""losscc, the loss compiler: SymPy specs in, an MLX package with symbolic gradients and GPU kernels out.

The stages, each importing only from those above it:

    spec/       what a user writes: the vocabulary, stable functions, validation, loading a spec file
    ir.py       the programs derivation produces and every backend prints
    derive.py   symbolic gradients: a spec's formula -> the IR of each variant
    describe.py the math and arguments of a loss as text (docstrings, catalogue)
    lower/      passes on the IR shared by every backend: cheaper forms, CSE schedule, residuals
    backends/   mlx/ (the public functions, MLX ops) and gpu/ (Metal and CUDA kernels), each with
                its printer and its templates in templates/<backend>/
    render.py   renders every backend's files of a package and writes the package atomically
    tools/      the ``losscc`` command line, the catalogue and its plots, scaffolding, the benchmark
"""
