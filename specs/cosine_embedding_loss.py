"""Cosine embedding loss on pairs and labels -1 or 1 (as torch.nn.functional.cosine_embedding_loss)."""

from sympy import Eq, Piecewise, sqrt

from generator.spec import Input, Loss, Param, RowSum, relu

x1 = Input("x1", doc="The first embeddings.")
x2 = Input("x2", doc="The second embeddings.")
targets = Input("targets", per_row=True, differentiable=False,
                doc="One label per pair: 1 for similar pairs, -1 for dissimilar ones.")
margin = Param("margin", 0.0, range="[-1, 1]", doc="The similarity below which dissimilar pairs cost nothing.")

EPS = 1e-12  # PyTorch's constant, added to each squared norm
cosine = RowSum(x1 * x2) / sqrt((RowSum(x1**2) + EPS) * (RowSum(x2**2) + EPS))

spec = Loss(
    "cosine_embedding_loss",
    inputs=[x1, x2, targets],
    axis=-1,
    params=[margin],
    reduction="mean",
    doc="Computes the cosine embedding loss: 1 - cos(x1, x2) for similar pairs, max(0, cos(x1, x2) - margin) for dissimilar ones.",
    row=Piecewise((1 - cosine, Eq(targets, 1)), (relu(cosine - margin), True)),
    kinks="at cos(x1, x2) == margin (dissimilar pairs) the gradient is 0.",
)
