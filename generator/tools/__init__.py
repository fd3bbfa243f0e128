"""Tools around the compiler: the ``losscc`` command line, the catalogue and its plots, scaffolding, the benchmark."""
