"""Triplet loss with p-norm distances (as mlx.nn.losses.triplet_loss)."""

from sympy import Abs

from generator.spec import Input, Loss, Param, RowSum, relu

anchors = Input("anchors", doc="The anchor samples.")
positives = Input("positives", doc="The positive samples.")
negatives = Input("negatives", doc="The negative samples.")
p = Param("p", 2, range="[1, inf)", doc="The norm degree for pairwise distance.")
margin = Param("margin", 1.0, doc="Margin for the triplet loss.")
eps = Param("eps", 1e-6, range="(0, inf)",
            doc="Small positive constant added to the p-norm sum before taking the ``1 / p`` power.")


def distance(a, b):
    return (RowSum(Abs(a - b) ** p) + eps) ** (1 / p)


spec = Loss(
    "triplet_loss",
    inputs=[anchors, positives, negatives],
    axis=-1,
    params=[p, margin, eps],
    reduction="none",
    broadcast=True,
    doc="Computes the triplet loss max(||A - P||_p - ||A - N||_p + margin, 0).",
    row=relu(distance(anchors, positives) - distance(anchors, negatives) + margin),
    kinks="at ||A - P||_p - ||A - N||_p + margin == 0 the gradient is 0; at a == b elementwise the gradient is 0.",
)
