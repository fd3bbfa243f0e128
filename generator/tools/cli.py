"""The ``losscc`` command line (also ``python -m generator``).

    losscc new NAME          write specs/NAME.py, a commented spec to fill in
    losscc generate [NAMES]  compile specs/ into generated/ (all or nothing)
    losscc check             fail if generated/ differs from what specs/ produce
    losscc list              the losses as a table
    losscc show NAME         formula, derived gradient, kinks, generated files
    losscc doc               build the catalogue in docs/catalog/

The folders are those of the current one (``--specs DIR`` and ``--out DIR``
name others): a project compiles its own specs into its own package with
``losscc generate --specs specs --out mylosses``.
"""

from __future__ import annotations

import difflib
import time
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .. import describe
from ..derive import derive
from ..render import differences, loss_files, render_package, write_package
from ..spec.load import SpecFileError, load_spec, spec_paths
from ..spec.vocabulary import SpecError
from . import catalog, scaffold

# Folders of the project the command runs in (a repository laid out like this one, or a user's project).
SPECS = Path("specs")
GENERATED = Path("generated")
CATALOGUE = Path("docs", "catalog")


def _console():
    """A rich console; off a terminal (pipes, tests) wide enough that tables do not wrap."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def _shown(path):
    """``path`` relative to the current folder when it is inside it; folders end with "/"."""
    path = Path(path).resolve()
    text = str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    return text + "/" if path.is_dir() else text


def _count(number, noun):
    return f"{number} {noun}" + ("" if number == 1 else "es" if noun.endswith("s") else "s")


@contextmanager
def _progress(console, total, label):
    """A progress bar on a terminal (nothing elsewhere); yields ``step(description)``."""
    with Progress(
        TextColumn(f"{label} [bold]{{task.description}}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("", total=total)
        yield lambda description: bar.update(task, advance=1, description=description)


def _spec_names(spec_dir):
    names = [path.stem for path in spec_paths(spec_dir)]
    if not names:
        raise click.ClickException(f"no spec files in {_shown(spec_dir)}")
    return names


def _known(names, available, spec_dir):
    """Raise a clear error for each name that is not a spec, suggesting close ones."""
    for name in names:
        if name not in available:
            close = difflib.get_close_matches(name, available, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else f"; `losscc new {name}` writes one"
            raise click.ClickException(f"no spec named {name!r} in {_shown(spec_dir)}{hint}")


def _load(spec_dir, name):
    try:
        return load_spec(Path(spec_dir) / f"{name}.py")
    except SpecFileError as error:
        raise click.ClickException(str(error)) from None


SPECS_OPTION = click.option(
    "--specs", "spec_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=SPECS,
    show_default=True, help="Folder of spec files.",
)
PACKAGE_OPTION = click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=GENERATED, show_default=True,
    help="The generated package folder.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """losscc: a loss compiler for MLX. Specs in ./specs, the package in ./generated (or --specs DIR, --out DIR)."""


@main.command()
@click.argument("name")
@click.option("--rowwise", is_flag=True, help="A loss that reduces along an axis (like cross_entropy).")
@click.option("--specs", "spec_dir", type=click.Path(file_okay=False, path_type=Path), default=SPECS,
              show_default=True, help="Folder to write the spec into.")
def new(name, rowwise, spec_dir):
    """Write specs/NAME.py: a commented spec to fill in (never overwrites)."""
    try:
        scaffold.check_name(name)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="NAME") from None
    try:
        path = scaffold.write_spec(spec_dir, name, "rowwise" if rowwise else "elementwise")
    except FileExistsError:
        message = f"{_shown(spec_dir / f'{name}.py')} already exists; edit it or choose another name"
        raise click.ClickException(message) from None
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {_shown(path)}: edit the formula, then `losscc generate {name}` and `losscc show {name}`")


@main.command()
@click.argument("names", nargs=-1)
@SPECS_OPTION
@PACKAGE_OPTION
def generate(names, spec_dir, out):
    """Compile the specs into the package, all or nothing.

    With NAMES, only those specs are compiled again; every other loss keeps the
    module it has in the package (a loss without one is compiled too), so the
    package stays complete. `losscc check` still compares every file.
    """
    start = time.perf_counter()
    available = _spec_names(spec_dir)
    _known(names, available, spec_dir)
    reuse = {}
    if names:
        for name in available:
            paths = [out / path for path in loss_files(name)]
            if name not in names and all(path.is_file() for path in paths):
                reuse[name] = {path: (out / path).read_text() for path in loss_files(name)}
    console = _console()
    try:
        with _progress(console, len(available), "generate") as step:
            files = render_package(spec_dir, reuse=reuse, progress=step)
    except SpecFileError as error:
        raise click.ClickException(str(error)) from None
    changed = differences(files, out)
    if changed:
        try:
            write_package(files, out)
        except SpecFileError as error:  # an output folder that is not a package is never replaced
            raise click.ClickException(str(error)) from None
    compiled = len(available) - len(reuse)
    kept = f" ({compiled} compiled, {len(reuse)} kept)" if reuse else ""
    what = _count(len(changed), "file") + " changed" if changed else "nothing changed"
    click.echo(f"generated {_count(len(available), 'loss')}{kept} into {_shown(out)} in "
               f"{time.perf_counter() - start:.1f} s; {what}")


@main.command()
@SPECS_OPTION
@PACKAGE_OPTION
def check(spec_dir, out):
    """Fail if the package differs from what the specs produce."""
    available = _spec_names(spec_dir)
    try:
        with _progress(_console(), len(available), "check") as step:
            files = render_package(spec_dir, progress=step)
    except SpecFileError as error:
        raise click.ClickException(str(error)) from None
    stale = differences(files, out)
    if stale:
        raise click.ClickException(
            f"{_shown(out)} is stale; run `losscc generate` (`make generate` in the losscc repository). Differing files: {', '.join(stale)}"
        )
    click.echo(f"{_shown(out)} is up to date ({len(files)} files)")


@main.command(name="list")
@SPECS_OPTION
def list_losses(spec_dir):
    """The losses as a table: name, kind, inputs, parameters, backends."""
    names = _spec_names(spec_dir)
    rows = [catalog.summary(_load(spec_dir, name)) for name in names]
    table = Table(title=f"{_count(len(rows), 'loss')} in {_shown(spec_dir)}")
    for column in rows[0]:
        table.add_column(column, no_wrap=column == "name", style="bold" if column == "name" else None)
    for row in rows:
        table.add_row(*(Text(value) for value in row.values()))  # Text: "[weights]" is not markup
    _console().print(table)


@main.command()
@click.argument("name")
@click.option("--latex", is_flag=True, help="Print LaTeX (as in the docstring and the catalogue).")
@SPECS_OPTION
@PACKAGE_OPTION
def show(name, latex, spec_dir, out):
    """The formula, the derived gradient, the kink convention and the generated files of NAME."""
    available = _spec_names(spec_dir)
    _known([name], available, spec_dir)
    loss = _load(spec_dir, name)
    try:
        variants = derive(loss)
    except SpecError as error:
        raise click.ClickException(f"{loss.source}: {error}") from None
    heading = lambda text: click.echo(click.style(text, bold=True))
    heading(f"{loss.name}  ({loss.kind} loss, {loss.source})")
    click.echo(f"  {catalog.call_signature(loss)}")
    click.echo(f"  {loss.doc.strip()}")
    width = _console().width
    if loss.kind == "recurrence":
        forward, backward = describe.recurrence_equations(variants, latex, width)
        heading("\nFormula (the spec's step)")
        click.echo(forward)
        heading("\nGradient: the backward step, derived by the generator")
        click.echo(backward + "\n" + describe.recurrence_note(variants))
    for variant in variants if loss.kind != "recurrence" else ():
        title = describe.variant_title(variant)
        suffix = f" ({title})" if title else ""
        formula, gradient = catalog.latex_lines(loss, variant) if latex else catalog.pretty_lines(loss, variant, width)
        heading(f"\nFormula{suffix}")
        click.echo("\n".join(formula))
        heading(f"\nGradient{suffix}, derived symbolically (per unit cotangent)")
        click.echo("\n".join(gradient))
    if loss.kind == "rowwise":
        click.echo("\n" + catalog.ROWWISE_NOTE.replace("$", ""))
    heading("\nKinks")
    click.echo(describe.kinks_text(loss))
    heading("\nGenerated files")
    others = {n: {} for n in available if n != name}  # render this loss only
    try:
        rendered = render_package(spec_dir, reuse=others)
    except SpecFileError as error:
        raise click.ClickException(str(error)) from None
    for path in loss_files(name):
        module = out / path
        if not module.is_file():
            state = f"missing: run `losscc generate {name}`"
        else:
            state = "up to date" if rendered[path] == module.read_text() else f"stale: run `losscc generate {name}`"
        click.echo(f"{_shown(module)}  ({state})")
    shared = ", ".join(_shown(out / f) for f in ("_runtime.py", "_linear.py", "_distributed.py", "_lattice.py", "_gpu.py"))
    click.echo(f"{shared}  (shared by every loss)")


@main.command()
@SPECS_OPTION
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=CATALOGUE, show_default=True,
              help="The catalogue folder (replaced as a whole).")
def doc(spec_dir, out):
    """Build the catalogue: a page per loss with formulas and a plot, and an index."""
    start = time.perf_counter()
    available = _spec_names(spec_dir)
    try:
        with _progress(_console(), 2 * len(available), "doc") as step:
            names = catalog.build(spec_dir, out, progress=step)
    except (SpecFileError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"built the catalogue of {_count(len(names), 'loss')} in {_shown(out)} in "
               f"{time.perf_counter() - start:.1f} s; open {_shown(out / 'index.md')}")


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
