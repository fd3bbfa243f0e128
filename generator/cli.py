"""The ``losscc`` command line: generate, check and list the compiled losses."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click

from .derive import derive
from .load import SpecFileError, load_spec, spec_paths
from .render import ROOT, differences, render_package, write_package

SPECS = ROOT / "specs"
GENERATED = ROOT / "generated"


def _fail(error):
    click.echo(f"error: {error}", err=True)
    sys.exit(1)


@click.group()
def main():
    """losscc: a loss compiler for MLX. Specs in specs/, output in generated/."""


@main.command()
@click.option("--specs", "spec_dir", type=click.Path(file_okay=False, path_type=Path), default=SPECS,
              show_default=True, help="Folder of spec files.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=GENERATED,
              show_default=True, help="The package folder to (re)write.")
def generate(spec_dir, out):
    """Regenerate the package from every spec (all or nothing)."""
    start = time.perf_counter()
    try:
        files = render_package(spec_dir)
    except SpecFileError as error:
        _fail(error)
    write_package(files, out)
    losses = len(files) - 2  # __init__.py and _runtime.py
    click.echo(f"generated {losses} losses into {out} in {time.perf_counter() - start:.1f} s")


@main.command()
@click.option("--specs", "spec_dir", type=click.Path(file_okay=False, path_type=Path), default=SPECS,
              show_default=True, help="Folder of spec files.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=GENERATED,
              show_default=True, help="The committed package folder to compare with.")
def check(spec_dir, out):
    """Fail if the package differs from what the specs produce."""
    try:
        files = render_package(spec_dir)
    except SpecFileError as error:
        _fail(error)
    with tempfile.TemporaryDirectory() as scratch:
        write_package(files, Path(scratch) / "generated")
        stale = differences(files, out)
    if stale:
        _fail(f"{out} is stale; run `make generate`. Differing files: {', '.join(stale)}")
    click.echo(f"{out} is up to date ({len(files)} files)")


@main.command(name="list")
@click.option("--specs", "spec_dir", type=click.Path(file_okay=False, path_type=Path), default=SPECS,
              show_default=True, help="Folder of spec files.")
def list_losses(spec_dir):
    """List the losses: name, kind, inputs and parameters."""
    try:
        losses = [load_spec(path, ROOT) for path in spec_paths(spec_dir)]
    except SpecFileError as error:
        _fail(error)
    for loss in losses:
        params = ", ".join(f"{p.name}={p.default!r}" for p in loss.params)
        inputs = ", ".join(i.name for i in loss.inputs)
        click.echo(f"{loss.name:28s} {loss.kind:11s} ({inputs}) {params}")


@main.command()
@click.option("--quick", is_flag=True, help="A few seconds: one small size, two rounds (a smoke test).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for bench.json, bench.md and speedup.png (default: bench/results).")
@click.option("--loss", "losses", multiple=True, help="Only this loss (repeatable).")
@click.option("--size", "sizes", type=int, multiple=True, help="Only this many elements (repeatable).")
def bench(quick, out, losses, sizes):
    """Time value_and_grad and forward against mlx.nn.losses; write a report."""
    from . import bench as benchmark

    benchmark.run(quick=quick, out=out or benchmark.RESULTS, losses=losses, sizes=sizes, echo=click.echo)


if __name__ == "__main__":
    main()
