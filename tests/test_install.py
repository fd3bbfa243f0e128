"""``pip install <this repository>`` in a fresh virtual environment, used from another project's folder.

What a user's project does: install the repository (from a path, then from a
git URL), import the catalogue losses as ``losscc`` and take a gradient, and
compile its own specs (a copy of ``specs/huber_loss.py``) with ``losscc
generate --specs DIR --out DIR`` into its own package, all from a folder that
has a ``generated/`` of its own. The install is real: the dependencies come
from the package index, the wheel is built from the files a clone holds (an
in-tree ``build/`` could hold files of older layouts), and nothing of this
repository is on ``sys.path``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import venv

import pytest

from tests.helpers import ROOT

INSTALL_TIMEOUT_S = 600  # the dependencies come from the package index
RUN_TIMEOUT_S = 300

# Run inside the fresh environment, from the user's project: the catalogue against mlx.nn.losses.
CATALOGUE_CHECK = '''\
import mlx.core as mx
import mlx.nn.losses as reference

import generated  # the user's own package of that name
import losscc

assert generated.MINE, "the user's generated/ was shadowed"
assert "site-packages" in losscc.__file__, losscc.__file__

logits = mx.array([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]])
targets = mx.array([0, 1])
ours = mx.grad(lambda z: losscc.cross_entropy(z, targets, reduction="mean"))(logits)
theirs = mx.grad(lambda z: reference.cross_entropy(z, targets, reduction="mean"))(logits)
assert mx.allclose(ours, theirs, rtol=1e-5, atol=1e-7).item(), (ours, theirs)
assert not mx.allclose(ours, mx.zeros_like(ours)).item()
print("catalogue ok")
'''

# The package the user's project compiled from a copy of specs/huber_loss.py, against the derivative
# written out: d/dx sum huber(x - y) = clip(x - y, -delta, delta).
OWN_PACKAGE_CHECK = '''\
import mlx.core as mx

import mylosses

x = mx.array([0.25, -2.0, 3.0, 0.5])
y = mx.array([0.0, 1.0, -1.0, 0.75])
delta = 0.5
grad = mx.grad(lambda a: mylosses.huber_loss(a, y, delta=delta, reduction="sum"))(x)
want = [max(-delta, min(delta, a - b)) for a, b in zip(x.tolist(), y.tolist())]
assert grad.tolist() == want, (grad, want)
print("own package ok")
'''


def _copy_of_the_checkout(destination):
    """The files a clone holds, and new ones not yet committed; nothing built or cached here."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():  # a tracked file deleted in the working tree is gone
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    return destination


def _run(command, cwd, timeout=RUN_TIMEOUT_S):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def environment(tmp_path_factory):
    """A fresh virtual environment, and a user's project folder outside this repository."""
    root = tmp_path_factory.mktemp("install")
    venv.EnvBuilder(with_pip=True).create(root / "venv")
    project = root / "project"
    (project / "specs").mkdir(parents=True)
    shutil.copy(ROOT / "specs" / "huber_loss.py", project / "specs")
    (project / "generated").mkdir()
    (project / "generated" / "__init__.py").write_text("MINE = True\n")
    return root / "venv" / "bin", project


@pytest.fixture(scope="module")
def installed_from_path(environment, tmp_path_factory):
    bin_dir, project = environment
    clone = _copy_of_the_checkout(tmp_path_factory.mktemp("checkout"))
    _run([bin_dir / "python", "-m", "pip", "install", "--quiet", str(clone)], project, INSTALL_TIMEOUT_S)
    return bin_dir, project


def test_the_catalogue_is_one_import_from_another_project(installed_from_path):
    bin_dir, project = installed_from_path
    assert "catalogue ok" in _run([bin_dir / "python", "-c", CATALOGUE_CHECK], project)


def test_a_project_compiles_its_own_specs_into_its_own_package(installed_from_path):
    bin_dir, project = installed_from_path
    losscc = bin_dir / "losscc"
    out = _run([losscc, "generate", "--specs", "specs", "--out", "mylosses"], project)
    assert "generated 1 loss into mylosses/" in out, out
    header = (project / "mylosses" / "huber_loss.py").read_text().splitlines()[0]
    assert "from specs/huber_loss.py" in header, header  # the same wherever the project lies
    assert "up to date" in _run([losscc, "check", "--specs", "specs", "--out", "mylosses"], project)
    assert "huber_loss" in _run([losscc, "list", "--specs", "specs"], project)
    assert "own package ok" in _run([bin_dir / "python", "-c", OWN_PACKAGE_CHECK], project)


def test_a_git_url_installs_the_same(installed_from_path):
    """``pip install git+file://...``: the last commit, cloned and built by pip itself."""
    bin_dir, project = installed_from_path
    _run([bin_dir / "python", "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall",
          f"git+file://{ROOT}"], project, INSTALL_TIMEOUT_S)
    assert "catalogue ok" in _run([bin_dir / "python", "-c", CATALOGUE_CHECK], project)
    out = _run([bin_dir / "losscc", "generate", "--specs", "specs", "--out", "from_git"], project)
    assert "generated 1 loss into from_git/" in out, out
