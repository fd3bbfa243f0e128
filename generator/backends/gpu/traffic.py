"""The static traffic figure of each loss's GPU kernels.

For a forward and a backward kernel: the bytes they read and write per
element against the minimum (every array the math needs read once, every
output written once), in the common training setting: float32 arrays, int32
class indices, ``reduction='mean'`` and, for row-wise losses, rows of
:data:`ROW_LENGTH` elements. 1.00 means no pass over memory is wasted.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...derive import derive
from .kernels import kernels

ROW_LENGTH = 1024


@dataclass
class Figure:
    """The traffic ratios and passes of one variant's forward and backward kernel."""

    variant: str
    forward: float
    backward: float
    forward_passes: int
    backward_passes: int

    def __str__(self):
        name = self.variant.lstrip("_") or "default"  # the variant key: flags, then the target form
        return (
            f"{name}: forward {self.forward:.2f} ({self.forward_passes} pass{'es' if self.forward_passes > 1 else ''}),"
            f" backward {self.backward:.2f} ({self.backward_passes} pass{'es' if self.backward_passes > 1 else ''})"
        )


def figures_of(loss, built, row_length=ROW_LENGTH):
    """Figures for already built kernels (``kernels.kernels``) of ``loss``."""
    found = []
    for v in built:
        # A row-wise loss without class targets has only the "_indices" form: leave it out of the name.
        name = v.suffix[: -len("_indices")] if loss.kind == "rowwise" and not loss.class_targets else v.suffix
        found.append(Figure(name, v.forward.traffic.ratio(row_length), v.backward.traffic.ratio(row_length),
                            v.forward.traffic.passes, v.backward.traffic.passes))
    return found


def figures(loss, row_length=ROW_LENGTH):
    """One :class:`Figure` per variant of ``loss`` (a loaded spec)."""
    return figures_of(loss, kernels(loss, derive(loss)), row_length)


def summary(loss):
    """The worst forward and backward figures of ``loss``, for one line of ``losscc list``."""
    found = figures(loss)
    return f"traffic fwd {max(f.forward for f in found):.2f} bwd {max(f.backward for f in found):.2f}"
