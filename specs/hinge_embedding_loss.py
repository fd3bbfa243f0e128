"""Hinge embedding loss on distances and labels -1 or 1 (as torch.nn.functional.hinge_embedding_loss)."""

from sympy import Eq, Piecewise

from generator.spec import Input, Loss, Param, relu

inputs = Input("inputs", doc="The distances (or dissimilarities) of the pairs.")
targets = Input("targets", differentiable=False, doc="The labels: 1 for similar pairs, -1 for dissimilar ones.")
margin = Param("margin", 1.0, doc="The distance beyond which dissimilar pairs cost nothing.")

spec = Loss(
    "hinge_embedding_loss",
    inputs=[inputs, targets],
    params=[margin],
    reduction="mean",
    doc="Computes the hinge embedding loss: inputs for similar pairs, max(0, margin - inputs) for dissimilar ones.",
    elementwise=Piecewise((inputs, Eq(targets, 1)), (relu(margin - inputs), True)),
    kinks="at inputs == margin (dissimilar pairs) the gradient is 0.",
)
