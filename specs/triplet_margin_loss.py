"""Triplet margin loss with p-norm distances and the distance swap (as torch.nn.functional.triplet_margin_loss)."""

from sympy import Abs

from generator.spec import Flag, Input, Loss, Param, RowSum, Select, minimum, relu

anchors = Input("anchors", doc="The anchor samples.")
positives = Input("positives", doc="The positive samples.")
negatives = Input("negatives", doc="The negative samples.")
margin = Param("margin", 1.0, doc="The margin by which the negative should be farther than the positive.")
p = Param("p", 2.0, range="(0, inf)", doc="The norm degree of the pairwise distance.")
eps = Param("eps", 1e-6, range="[0, inf)", doc="Added to the differences before the norm (as torch.pairwise_distance).")
swap = Flag("swap", False, doc="Whether the negative's distance is the smaller of anchor-negative and positive-negative.")


def distance(a, b):
    return RowSum(Abs(a - b + eps) ** p) ** (1 / p)


negative_distance = Select(swap, minimum(distance(anchors, negatives), distance(positives, negatives)),
                           distance(anchors, negatives))

spec = Loss(
    "triplet_margin_loss",
    inputs=[anchors, positives, negatives],
    axis=-1,
    params=[margin, p, eps, swap],
    reduction="mean",
    doc="Computes the triplet margin loss max(d(a, p) - d(a, n) + margin, 0) with d(a, b) = ||a - b + eps||_p.",
    row=relu(distance(anchors, positives) - negative_distance + margin),
    kinks="at d(a, p) - d(a, n) + margin == 0 the gradient is 0; with swap, on a tie of the two negative "
    "distances the gradient goes to d(a, n); where a difference is 0 its gradient is 0.",
)
