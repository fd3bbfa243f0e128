"""Rendering: a folder of specs to the files of one package, written atomically.

Each spec is loaded, derived and handed to every backend, which renders its
module of the loss; the backends add their shared files once. Everything is
rendered in memory first; a failing spec raises before any file is touched.
The new package is then written to a temporary folder beside the old one and
swapped in under a lock, so a reader (or a second generation running at
once) never sees a half-written package.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .backends import gpu, mlx
from .backends.mlx import exported, linear_kind
from .backends.source import GENERATED_MARK, environment
from .derive import derive
from .spec.load import SpecFileError, check_spec_names, load_spec, spec_paths
from .spec.vocabulary import SpecError

BACKENDS = (mlx, gpu)  # each renders one module per loss and adds its shared files to the package


def loss_files(name):
    """The package files one loss owns."""
    return tuple(backend.module_path(name) for backend in BACKENDS)


def _render_checked(env, loss):
    """The files one loss owns (see loss_files), every failure reported against its spec file."""
    try:
        variants = derive(loss)
        sources = [backend.render(env, loss, variants) for backend in BACKENDS]
    except SpecError as error:
        raise SpecFileError(loss.source, str(error)) from None
    except Exception as error:  # a construct validation let through: still one line naming the spec
        raise SpecFileError(loss.source, f"cannot be compiled: {type(error).__name__}: {error}") from None
    files = dict(zip(loss_files(loss.name), sources))
    for path, source in files.items():
        try:
            compile(source, path, "exec")
        except SyntaxError as error:  # last line of defence: never write code Python cannot read
            raise SpecFileError(
                loss.source, f"the generated {path} does not compile (line {error.lineno}: {error.msg})"
            ) from None
    return files


def render_package(spec_dir, *, reuse=None, progress=None):
    """The specs in ``spec_dir`` in, every file of their package out, as {relative path: text}.

    ``reuse`` maps loss names to their files ({path: text}, see loss_files) taken
    as they are instead of rendering their specs (``losscc generate NAMES``
    keeps the other losses); ``progress(name)`` is called as each loss is done.
    """
    env = environment()
    reuse = reuse or {}
    names, files = [], {}
    paths = spec_paths(spec_dir)
    check_spec_names(spec_dir, paths)
    losses = {path.stem: load_spec(path) for path in paths}  # the loader checks that a loss is named after its file
    _check_token_losses(losses)
    for name, loss in losses.items():
        files.update(reuse[name] if name in reuse else _render_checked(env, loss))
        names.append((name, exported(loss)))
        if progress is not None:
            progress(name)
    for backend in BACKENDS:
        files.update(backend.package_files(env, names))
    return files


def _check_token_losses(losses):
    """A loss of Sequence or Contrastive inputs makes them with another loss of the package: a class loss
    with a ``linear_`` form and an ``ignore_index`` (the cross entropy)."""
    for loss in losses.values():
        for sequence in (loss.sequences + loss.contrastives)[:1]:  # one token loss for all (the vocabulary checks)
            token = losses.get(sequence.token_loss)
            if (token is None or linear_kind(token) != "classes"
                    or not any(t.ignore_index is not None for t in token.class_targets)):
                raise SpecFileError(loss.source, f"input {sequence.name!r}: token_loss {sequence.token_loss!r} must "
                                                 "be a loss of these specs of logits and class targets with an "
                                                 "ignore_index (as cross_entropy)")


class OutputError(SpecFileError):
    """The output folder cannot be replaced (reported like a spec error: one line, naming it)."""


@contextmanager
def _lock(target):
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_replaceable(target):
    """Only an empty folder or one losscc generated may be replaced: never lose a user's files."""
    if not target.exists():
        return
    if target.is_symlink() or not target.is_dir():
        raise OutputError(target, "is not a folder; refusing to replace it")
    foreign = []
    for path in sorted(target.rglob("*")):
        if "__pycache__" in path.relative_to(target).parts or path.is_dir():
            continue
        with open(path, "rb") as handle:
            generated = path.suffix == ".py" and handle.read(len(GENERATED_MARK)) == GENERATED_MARK.encode()
        if not generated:
            foreign.append(str(path.relative_to(target)))
    if foreign:
        raise OutputError(target, "holds files losscc did not generate; refusing to replace it: "
                                  + ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else ""))


def write_package(files, target):
    """Replace the folder ``target`` by the package ``files`` ({relative path: text}) in one swap.

    Only an empty folder or one losscc generated is replaced (see write_folder).
    """
    write_folder(files, target, _check_replaceable)


def write_folder(files, target, check_replaceable):
    """Replace the folder ``target`` by ``files`` ({relative path: text or bytes}) in one swap.

    The files are written to a staging folder beside ``target``; under a
    lock, ``check_replaceable(target)`` may refuse, else ``target`` is moved
    aside and the staging folder renamed into its place. A failure leaves
    ``target`` as it was; two writers at once each swap in a complete
    folder, one after the other.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-new-", dir=target.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; the folder is not
        for relative, content in sorted(files.items()):
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content, encoding="utf-8")
        with _lock(target):
            check_replaceable(target)  # under the lock: no other writer is swapping it meanwhile
            for stale in target.parent.glob(f".{target.name}-old-*"):  # left by a writer that was killed
                shutil.rmtree(stale, ignore_errors=True)
            retired = None
            if target.exists():
                retired = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
                os.rename(target, retired / target.name)
            os.rename(staging, target)
            if retired is not None:
                shutil.rmtree(retired)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def differences(files, target):
    """Paths that differ between ``files`` and the folder ``target``."""
    target = Path(target)
    on_disk = {  # bytes: a folder that is not a package may hold binary files
        str(p.relative_to(target)): p.read_bytes()
        for p in target.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    } if target.is_dir() else {}
    wanted = {name: text.encode("utf-8") for name, text in files.items()}
    return sorted(
        name for name in set(wanted) | set(on_disk) if wanted.get(name) != on_disk.get(name)
    )
